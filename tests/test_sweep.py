"""No run left STARTED: a run whose process was SIGKILLed is swept (failed in Dagster, recorded in
genepool.run_failures); a live run is left alone. Real PostgreSQL instance storage, a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from genepool import db as postgres
from orchestration.sweep import process_gone, sweep_dead_runs

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import dagster as dg

    @dg.op
    def hang():
        Path(sys.argv[2]).write_text("started")
        time.sleep(600)

    @dg.job
    def generation_job():
        hang()

    inst = dg.DagsterInstance.from_config(sys.argv[1])
    generation_job.execute_in_process(instance=inst, tags={"dagster/partition": "support-desk/g0001"})
''')


def _instance(pg_server_url: str, home: Path) -> dg.DagsterInstance:
    name = f"sweep_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres._with_database(pg_server_url, name).replace("postgresql://", "postgresql+psycopg2://", 1)
    home.mkdir()
    (home / "dagster.yaml").write_text(json.dumps({"storage": {"postgres": {"postgres_url": url}},
                                                   "telemetry": {"enabled": False}}))
    return dg.DagsterInstance.from_config(str(home))


@pytest.mark.probe
def test_a_run_left_started_by_a_sigkilled_process_is_swept(pg_server_url, db, tmp_path, probe):
    home = tmp_path / "home"
    instance = _instance(pg_server_url, home)
    script, marker = tmp_path / "child.py", tmp_path / "started"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(home), str(marker)], cwd=str(ROOT),
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        end = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the child process ended before its step started"
            assert time.monotonic() < end, "the child's step never started"
            time.sleep(0.2)
        [run] = instance.get_runs(dg.RunsFilter(job_name="generation_job"))
        assert run.status == dg.DagsterRunStatus.STARTED
        # while the process lives, the run is left alone
        assert sweep_dead_runs(instance, db) == []
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # what Dagster alone leaves

    [swept] = sweep_dead_runs(instance, db)
    assert (swept.run_id, swept.pid, swept.partition_key) == (run.run_id, child.pid, "support-desk/g0001")
    after = instance.get_run_by_id(run.run_id)
    assert after.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert f"its process (pid {child.pid}) is gone" in failure.event_log_entry.dagster_event.message
    [row] = db.fetchall("SELECT * FROM genepool.run_failures")
    assert (row["run_id"], row["job_name"], row["partition_key"], row["agent_type"]) == (
        run.run_id, "generation_job", "support-desk/g0001", "support-desk")
    assert "marked failed by genepool's sweep" in row["error"]
    assert sweep_dead_runs(instance, db) == []  # idempotent: nothing left to sweep
    instance.dispose()
    probe("held: a run left STARTED by a SIGKILLed process is marked FAILURE and recorded in run_failures")


def test_process_gone_tells_a_live_process_from_a_dead_or_reused_pid():
    assert process_gone(os.getpid(), time.time()) is None  # this process started before "the run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert process_gone(dead.pid, time.time() - 60) == f"its process (pid {dead.pid}) is gone"
    # our own pid, but a "run" that started before this process did: the pid was reused
    assert "started after the run" in process_gone(os.getpid(), 1.0)
