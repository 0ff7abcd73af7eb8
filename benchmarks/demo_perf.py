"""Speed and memory of the demo generation: `python -m benchmarks.demo_perf` (or `make perf`).

Runs generation 1 of the support-desk agent at the default budget through Dagster, in a fresh data
folder (its own embedded PostgreSQL, cold LLM cache), then re-runs the same partition warm. Writes
benchmarks/demo_perf.json with: wall time of the generation, time inside LLM calls per step (and the
share of the generation's wall time), LLM call counts, peak RSS, and the warm re-run's LLM calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

OUT = Path(__file__).with_name("demo_perf.json")
PURPOSE_TO_STEP = {"traces": "traces", "reflect": "mutated_population", "experiment": "experiment_results",
                   "validation": "pareto_front", "test": "promoted_prompts"}


def _step_stats(instance, run_id: str) -> dict[str, float]:
    return {s.step_key: round((s.end_time or 0) - (s.start_time or 0), 3)
            for s in instance.get_run_step_stats(run_id) if s.start_time}


def _llm_by_step(db, key: str, since_id: int) -> dict[str, dict]:
    rows = db.fetchall(
        "SELECT purpose, count(*) AS calls, sum((NOT cached)::int) AS uncached, sum(wall_ms) AS wall_ms"
        " FROM genepool.llm_calls WHERE partition_key = %s AND id > %s GROUP BY purpose",
        (key, since_id),
    )
    out: dict[str, dict] = {}
    for r in rows:
        step = PURPOSE_TO_STEP.get(r["purpose"], r["purpose"])
        d = out.setdefault(step, {"calls": 0, "uncached": 0, "llm_s": 0.0})
        d["calls"] += int(r["calls"])
        d["uncached"] += int(r["uncached"])
        d["llm_s"] = round(d["llm_s"] + float(r["wall_ms"]) / 1000, 3)
    return out


def measure(keep: bool = False) -> dict:
    data = Path(tempfile.mkdtemp(prefix="genepool-perf-"))
    os.environ["GENEPOOL_DATA_DIR"] = str(data)
    os.environ["DAGSTER_HOME"] = str(data / "dagster_home")
    os.environ.pop("GENEPOOL_DATABASE_URL", None)
    from genepool.db import Database, stop_embedded
    from orchestration.cli import _instance, run_generation_in_dagster
    from orchestration.definitions import optimizer_from_env

    try:
        db = Database.from_env()
        runs = {}
        for label in ("cold", "warm"):
            last = db.fetchone("SELECT coalesce(max(id), 0) AS id FROM genepool.llm_calls")["id"]
            t0 = time.perf_counter()
            # the warm run re-runs the closed generation on purpose (tag genepool/rerun=true)
            out = run_generation_in_dagster("support-desk", 1, metrics=False, rerun=label == "warm")
            wall = time.perf_counter() - t0
            key = out["partition_key"]
            steps = _step_stats(_instance(), out["run_id"])
            llm = _llm_by_step(db, key, last)
            gen_wall = out["timings"]["generation"]
            llm_total = sum(v["llm_s"] for v in llm.values())
            runs[label] = {
                "wall_s_total": round(wall, 2),
                "wall_s_generation": round(gen_wall, 2),
                "llm_s": round(llm_total, 2),
                "llm_share_of_generation": round(llm_total / gen_wall, 4) if gen_wall else None,
                "llm_calls": sum(v["calls"] for v in llm.values()),
                "llm_calls_uncached": sum(v["uncached"] for v in llm.values()),
                "steps": {s: {"wall_s": steps.get(s), **llm.get(s, {"calls": 0, "uncached": 0, "llm_s": 0.0})}
                          for s in ["traces", "failure_clusters", "mutated_population", "experiment_results",
                                    "pareto_front", "promoted_prompts"]},
                "promoted": [p.prompt_id for p in out["promoted"].promoted],
                "test": {pid: dataclasses.asdict(t) for pid, t in out["promoted"].test.items()},
            }
        return {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        # other work on the machine slows every call: the 1/5/15-minute load at the end of the run
                        "load_average": [round(x, 2) for x in os.getloadavg()]},
            "model": "SmolLM2-135M-Instruct Q4_1 (llama.cpp, greedy)",
            "config": optimizer_from_env().config().to_dict(),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "targets": {"generation_wall_s_max": 300, "llm_share_min": 0.95, "peak_rss_mib_max": 2048,
                        "warm_rerun_llm_calls": 0},
            "cold": runs["cold"],
            "warm": runs["warm"],
        }
    finally:
        stop_embedded(data / "pg")
        if not keep:
            shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    result = measure(args.keep)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    c, w = result["cold"], result["warm"]
    print(f"generation 1: {c['wall_s_generation']} s, {c['llm_calls']} LLM calls, "
          f"{c['llm_share_of_generation']:.1%} of the time in LLM calls; "
          f"warm re-run: {w['wall_s_generation']} s, {w['llm_calls_uncached']} new LLM calls; "
          f"peak RSS {result['peak_rss_mib']} MiB -> {args.out}")


if __name__ == "__main__":
    main()
