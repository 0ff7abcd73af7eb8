"""The fault matrix and the attack corpus as a report: `python -m benchmarks.reliability`.

Runs every test marked ``probe`` (tests/test_*.py; each records its outcome with the ``probe``
fixture of tests/conftest.py) and writes benchmarks/reliability.json: the pytest outcome of each probe
test and a ``probes`` list of {name, outcome, rows_lost, rows_duplicated, new_llm_calls_on_resume}.
A probe whose test failed is listed with outcome "FAILED" (and the run exits non-zero).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("reliability.json")


def run(out: Path = OUT, extra: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        probes_file = Path(tmp) / "probes.json"
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "GENEPOOL_PROBES_OUT": str(probes_file)}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "probe",
             f"--junitxml={junit}", *(extra or [])],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        wall = time.perf_counter() - t0
        probes = json.loads(probes_file.read_text()) if probes_file.exists() else []
        failed = _failed_tests(junit)
    recorded = {p["name"].split(" ")[0] for p in probes}
    for nodeid in failed:
        if nodeid not in recorded:
            probes.append({"name": nodeid, "outcome": "FAILED", "rows_lost": None, "rows_duplicated": None,
                           "new_llm_calls_on_resume": None})
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.reliability",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "pytest_exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "summary": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
        "probes": sorted(probes, key=lambda p: p["name"]),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _failed_tests(junit: Path) -> list[str]:
    if not junit.exists():
        return []
    import xml.etree.ElementTree as ET

    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            path = case.get("classname", "").replace(".", "/") + ".py"
            out.append(f"{path}::{case.get('name')}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args, extra = ap.parse_known_args(argv)
    report = run(args.out, extra)
    bad = [p for p in report["probes"] if p["outcome"] == "FAILED"]
    print(f"{len(report['probes'])} probes, {len(bad)} failed -> {args.out} ({report['summary']})")
    raise SystemExit(1 if bad or report["pytest_exit_code"] not in (0, 5) else 0)


if __name__ == "__main__":
    main()
