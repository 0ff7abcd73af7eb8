"""`genepool doctor`: a real completion in a child process on this machine, and a crash of the child
(a TEST DOUBLE child that kills itself with SIGSEGV, as a llama.cpp built with -march=native does on an
AMX CPU) turned into one line naming the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genepool.doctor import cpu_flags, run_doctor

ROOT = Path(__file__).resolve().parents[1]
SEGFAULTING_CHILD = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f amx_bf16 amx_tile amx_int8\n"


def test_doctor_passes_with_the_real_model_through_the_cli(monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENEPOOL_LLM_")}
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "doctor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "CPU flags" in out and "AMX" in out
    assert "SmolLM2-135M-Instruct" in out and ".gguf" in out
    assert "load " in out and "completion " in out
    assert "genepool doctor: OK - llama_cpp answered" in out


@pytest.mark.probe
def test_a_segfaulting_child_becomes_one_line_naming_the_fix(tmp_path, probe):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AMX_CPUINFO)
    printed: list[str] = []
    report = run_doctor(SEGFAULTING_CHILD, out=printed.append, cpuinfo=cpuinfo)
    assert not report.ok and report.returncode == -11
    line = report.line
    assert "\n" not in line
    assert "SIGSEGV" in line and "make reinstall-llama" in line and "-DGGML_NATIVE=OFF" in line
    assert "amx_tile" in line and "-march=native" in line
    assert any("AMX yes" in p for p in printed)
    probe("held: a SIGSEGV in the doctor's child became one line naming `make reinstall-llama` and the flags")


def test_a_child_error_is_reported_as_a_failure_not_a_crash(monkeypatch):
    monkeypatch.setenv("GENEPOOL_LLM_PROVIDER", "openai_compatible")
    monkeypatch.setenv("GENEPOOL_LLM_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on port 9
    monkeypatch.setenv("GENEPOOL_LLM_MODEL", "m")
    monkeypatch.setenv("GENEPOOL_LLM_MAX_RETRIES", "0")
    report = run_doctor(out=lambda s: None, timeout_s=120)
    assert not report.ok and report.returncode == 2
    assert "the test completion failed: LLMError: cannot reach http://127.0.0.1:9/v1" in report.line
    assert "reinstall" not in report.line


def test_bad_settings_are_one_line(monkeypatch):
    monkeypatch.setenv("GENEPOOL_LLM_CONCURRENCY", "lots")
    report = run_doctor(SEGFAULTING_CHILD, out=lambda s: None)
    assert not report.ok and "GENEPOOL_LLM_CONCURRENCY='lots' must be an integer" in report.line


def test_cpu_flags_reads_the_flags_of_interest(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(AMX_CPUINFO)
    assert cpu_flags(f) == ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "amx_tile", "amx_int8", "amx_bf16"]
    assert cpu_flags(tmp_path / "missing") == []


@pytest.mark.probe
def test_doctor_console_output_never_shows_the_key(monkeypatch, probe, capfd):
    """A server that echoes the planted key in its 401 body: the doctor's console lines stay clean."""
    from tests.stub_llm_server import StubLLMServer

    secret = "sk-doctor-planted-5c1d9e77a0"
    body = f'{{"error": "invalid api key {secret}", "auth": "Bearer {secret}"}}'
    with StubLLMServer(default={"status": 401, "body": body}) as stub:
        monkeypatch.setenv("GENEPOOL_LLM_PROVIDER", "openai_compatible")
        monkeypatch.setenv("GENEPOOL_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("GENEPOOL_LLM_MODEL", "stub-model")
        monkeypatch.setenv("GENEPOOL_LLM_API_KEY_ENV", "GENEPOOL_DOCTOR_TEST_KEY")
        monkeypatch.setenv("GENEPOOL_DOCTOR_TEST_KEY", secret)
        printed: list[str] = []
        report = run_doctor(out=printed.append, timeout_s=120)
        assert stub.requests and stub.requests[0]["headers"].get("Authorization") == f"Bearer {secret}"
    assert not report.ok and "HTTP 401" in report.line
    console = "\n".join([*printed, report.line, *capfd.readouterr()])
    assert secret not in console and "Bearer" not in console
    probe("held: a key echoed in a 401 body never reaches the doctor's console output")
