"""``genepool doctor``: one tiny completion of the configured task model, in a CHILD process.

A llama.cpp built for another CPU (``-march=native`` on a machine with AMX, say) does not raise an
exception: it kills the process with SIGSEGV or SIGILL on the first completion. Running the completion
in a child (``python -m genepool.doctor --child``) lets the parent turn that into one line naming the fix.
The parent also prints the CPU flags that matter to llama.cpp, the model file, and the child's load and
completion times. ``genepool demo`` runs it first.

The model is configured by the same environment as the code location (GENEPOOL_LLM_PROVIDER,
GENEPOOL_LLM_MODEL_PATH, GENEPOOL_LLM_BASE_URL, GENEPOOL_LLM_MODEL, ...; see ``llm_settings_from_env``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The flags llama.cpp's CPU backends dispatch on; AMX is the one whose native build crashed here.
CPU_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni",
                         "amx_tile", "amx_int8", "amx_bf16")
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
                       " -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
RESULT_PREFIX = "GENEPOOL_DOCTOR_RESULT "
PROMPT = [{"role": "user", "content": "Say OK."}]
PARAMS = {"temperature": 0.0, "max_tokens": 4}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The flags of interest this CPU has (empty when /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FLAGS_OF_INTEREST if f in have]
    return []


def crash_message(returncode: int, flags: Sequence[str], provider: str) -> str:
    """One line for a child killed by a signal, naming the fix."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    amx = [f for f in flags if f.startswith("amx")]
    if provider != "llama_cpp":
        return (f"genepool doctor: FAILED - the test completion crashed its process with {name}"
                f" (signal {-returncode}) in the {provider} client; run `genepool doctor` again and report it")
    cpu = f"this CPU has {' '.join(amx)}" if amx else "its build does not match this CPU"
    return (
        f"genepool doctor: FAILED - llama.cpp crashed the process with {name} (signal {-returncode}) on the test"
        f" completion; llama-cpp-python was probably built with -march=native ({cpu}). Fix: rebuild it portable"
        f" with `make reinstall-llama` (CMAKE_ARGS=\"{PORTABLE_CMAKE_ARGS}\")"
    )


@dataclass
class DoctorReport:
    ok: bool
    line: str  # the one-line verdict
    details: dict = field(default_factory=dict)
    returncode: int | None = None


def child_main() -> int:
    """Run in the child: build the configured client (no database, no cache), time load + completion,
    print one JSON result line. Errors (not crashes) are reported in the JSON with exit code 2."""
    result: dict = {"ok": False}
    try:
        from genepool.llm import build_client, llm_settings_from_env

        settings = llm_settings_from_env("GENEPOOL_LLM")
        settings.update(rpm_limit=None, tpm_limit=None, llm_concurrency=1)  # no database in the doctor
        result["provider"] = settings["provider"]
        t0 = time.perf_counter()
        client = build_client(None, **settings)
        prov = client.provider
        result["model"] = prov.model
        if hasattr(prov, "model_path"):
            result["model_path"] = prov.model_path
            result["model_mib"] = round(os.path.getsize(prov.model_path) / 2**20, 1)
        if hasattr(prov, "base_url"):
            result["base_url"] = prov.base_url
        if hasattr(prov, "_llama"):
            prov._llama()  # load the model: the crash, if any, may come here or at the first completion
        result["load_s"] = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        comp = client.chat(PROMPT, PARAMS, purpose="doctor")
        result["completion_s"] = round(time.perf_counter() - t1, 3)
        result.update(ok=True, text=comp.text[:40], prompt_tokens=comp.prompt_tokens,
                      completion_tokens=comp.completion_tokens)
    except Exception as exc:  # one line back to the parent; the traceback helps nobody here
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0 if result["ok"] else 2


def run_doctor(
    child_argv: Sequence[str] | None = None,
    *,
    timeout_s: float = 300.0,
    out: Callable[[str], None] = print,
    cpuinfo: str | Path = "/proc/cpuinfo",
) -> DoctorReport:
    """Run the child, print what was found, return the verdict. ``child_argv`` replaces the child command
    (tests use a child that kills itself with SIGSEGV, a test double of a crashing llama.cpp)."""
    from genepool.llm import llm_settings_from_env

    flags = cpu_flags(cpuinfo)
    try:
        provider = llm_settings_from_env("GENEPOOL_LLM")["provider"]
    except ValueError as exc:
        return DoctorReport(False, f"genepool doctor: FAILED - {exc}")
    amx = [f for f in flags if f.startswith("amx")]
    out(f"genepool doctor: CPU flags {' '.join(flags) or '(unknown)'}; AMX {'yes: ' + ' '.join(amx) if amx else 'no'}")
    try:
        import importlib.metadata

        out(f"genepool doctor: llama-cpp-python {importlib.metadata.version('llama-cpp-python')}, provider {provider}")
    except importlib.metadata.PackageNotFoundError:
        out(f"genepool doctor: llama-cpp-python not installed, provider {provider}")
    argv = list(child_argv or [sys.executable, "-m", "genepool.doctor", "--child"])
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return DoctorReport(False, f"genepool doctor: FAILED - the test completion took more than {timeout_s:g}s;"
                                   " check the model server (GENEPOOL_LLM_BASE_URL) or the machine's load")
    wall = time.perf_counter() - started
    result = {}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                result = json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                result = {}
    if proc.returncode < 0:
        return DoctorReport(False, crash_message(proc.returncode, flags, provider), result, proc.returncode)
    if proc.returncode != 0 or not result.get("ok"):
        why = result.get("error") or (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:300]
        return DoctorReport(False, f"genepool doctor: FAILED - the test completion failed: {why}", result,
                            proc.returncode)
    where = result.get("model_path") or result.get("base_url") or ""
    size = f" ({result['model_mib']} MiB)" if "model_mib" in result else ""
    out(f"genepool doctor: model {result.get('model')} {where}{size}")
    out(f"genepool doctor: load {result.get('load_s')} s, completion {result.get('completion_s')} s"
        f" ({result.get('prompt_tokens')}+{result.get('completion_tokens')} tokens), child wall {wall:.1f} s")
    return DoctorReport(True, f"genepool doctor: OK - {provider} answered {result.get('text', '')!r}", result, 0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m genepool.doctor", description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help="run the test completion here (internal)")
    args = p.parse_args(argv)
    if args.child:
        raise SystemExit(child_main())
    report = run_doctor()
    print(report.line, file=sys.stdout if report.ok else sys.stderr)
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
