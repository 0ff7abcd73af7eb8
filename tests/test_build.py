"""The llama.cpp build is portable: built with the Makefile's fixed flags, never -march=native.

A native build on a CPU with AMX segfaults in ggml_backend_amx_mul_mat (integration-facts.md), and a
wheel built on one machine must run on the next, so nothing in the build may depend on the machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parents[1]
# Features outside the portable set: a native build on a newer CPU would switch these on.
NOT_PORTABLE = ("AMX", "AVX512", "AVX_VNNI", "AVX512_BF16")


def test_makefile_builds_llama_cpp_without_native_flags():
    makefile = (ROOT / "Makefile").read_text()
    flags = re.search(r"^LLAMA_FLAGS := (.*)$", makefile, re.M).group(1).split()
    assert "-DGGML_NATIVE=OFF" in flags
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AVX512=OFF"} <= set(flags)
    assert "export CMAKE_ARGS := $(LLAMA_FLAGS)" in makefile
    # the same flags reach uv as a build setting (part of uv's cache key for built wheels)
    assert "llama-cpp-python:cmake.args=" in makefile


def test_installed_llama_cpp_has_only_portable_cpu_features():
    info = llama_cpp.llama_print_system_info().decode()
    enabled = {k.strip() for k, v in re.findall(r"([A-Z0-9_]+) = (\d)", info) if v == "1"}
    assert {"AVX", "AVX2", "FMA", "F16C"} <= enabled, info
    assert not [f for f in enabled if f.startswith(NOT_PORTABLE)], (
        f"llama-cpp-python was built with machine-specific features ({info.strip()}); "
        "rebuild it with `make reinstall-llama`"
    )
