"""The threshold sensor under a real, running ``dagster-daemon`` (not ``build_sensor_context``).

A temporary DAGSTER_HOME whose instance storage is a fresh database on the embedded test PostgreSQL;
a small code location (tests/daemon_location.py) with the real ``metric_threshold_sensor`` and a
one-step stand-in for ``generation_job`` (the sensor's behaviour is what is under test, not the
LLM work); the daemon is started as a child process in its own process group and stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.scheduler.instigation import TickStatus

from genepool import db as postgres
from genepool.core.genome import Genome
from genepool.db import Database, migrate
from genepool.registry import PromptRegistry
from resources.dbt import dbt_resource

ROOT = Path(__file__).resolve().parents[1]
SD, PL = "support-desk", "planner"


def _new_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres._with_database(server_url, name)


def _seed(db: Database) -> None:
    """Both agents are unhealthy on production traces (Langfuse-ingested): success 0.25."""
    reg = PromptRegistry(db)
    for agent in (SD, PL):
        rec = reg.register(agent, Genome(role=f"You are the {agent} agent."))
        reg.label(rec.id, "production", "seed", "initial")
        for i in range(8):
            db.execute(
                "INSERT INTO genepool.traces (id, agent_type, prompt_id, source, input, output, success)"
                " VALUES (%s,%s,%s,'langfuse','q','a',%s)",
                (f"{agent}-{i}", agent, rec.id, i % 4 == 0),
            )
    dbt_resource(db.url).cli(["run", "--select", "agent_health"]).wait()


def start_daemon(home: Path, env: dict) -> subprocess.Popen:
    """``dagster-daemon run`` in its own process group (so its code server child stops with it)."""
    log = open(home / "daemon.log", "wb")
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(home / "workspace.yaml")],
        cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_daemon(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait(what: str, fn, timeout: float, log: Path):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Error loading repository location" in text:
            raise AssertionError(f"the daemon could not load the code location:\n{text[-3000:]}")
        value = fn()
        if value:
            return value
        time.sleep(1.0)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{tail}")


def _ticks(instance: dg.DagsterInstance, name: str) -> list:
    out = []
    for state in instance.all_instigator_state():
        if state.name == name:
            out.extend(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50))
    return out


@pytest.mark.timeout(600)
def test_running_daemon_starts_a_generation_only_for_the_opted_in_agent(pg_server_url, tmp_path):
    db = Database(_new_database(pg_server_url, "gpd"))
    migrate(db.url)
    _seed(db)
    dagster_url = _new_database(pg_server_url, "dagd").replace("postgresql://", "postgresql+psycopg2://", 1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(json.dumps({
        "storage": {"postgres": {"postgres_url": dagster_url}},
        "telemetry": {"enabled": False},
    }))
    (home / "workspace.yaml").write_text(json.dumps({
        "load_from": [{"python_file": {"relative_path": str(ROOT / "tests" / "daemon_location.py"),
                                       "working_directory": str(ROOT), "location_name": "daemon_test"}}],
    }))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "GENEPOOL_TEST_DB_URL": db.url,
        # only support-desk is opted in; the planner is just as unhealthy but absent
        "GENEPOOL_THRESHOLDS": json.dumps({SD: {"min_success": 0.8, "cooldown_minutes": 0}}),
    }
    instance = dg.DagsterInstance.from_config(str(home))
    proc = start_daemon(home, env)
    log = home / "daemon.log"
    try:
        runs = _wait("a run requested by the sensor's tick",
                     lambda: instance.get_runs(dg.RunsFilter(job_name="generation_job")), 300, log)
        [run] = runs
        assert (run.tags["dagster/partition"], run.tags["dagster/partition/agent"],
                run.tags["dagster/partition/generation"]) == (f"{SD}|g0001", SD, "g0001")
        assert run.tags["genepool/agent_type"] == SD
        assert run.tags["genepool/reason"] == "success 0.25 < 0.80"
        assert SD in instance.get_dynamic_partitions("agents")  # both dimensions of the grid cell were added
        assert "g0001" in instance.get_dynamic_partitions("generation_numbers")
        done = _wait("the run to finish", lambda: (r := instance.get_run_by_id(run.run_id)) and r.is_finished
                     and r, 240, log)
        assert done.status == dg.DagsterRunStatus.SUCCESS
        # later ticks skip: while the run goes, it is named; once it is done, support-desk's observation was
        # acted on (no second generation for the same traces); the planner is never opted in
        skipped = _wait(
            "a skipped tick after the run",
            lambda: [t.skip_reason for t in _ticks(instance, "metric_threshold_sensor")
                     if t.status == TickStatus.SKIPPED and "already started" in (t.skip_reason or "")], 120, log,
        )
        reason = skipped[0]
        assert f"{PL}: not opted in (add it to GENEPOOL_THRESHOLDS" in reason
        assert f"{SD}: success 0.25 < 0.80, but this observation already started {SD}/g0001" in reason
    finally:
        stop_daemon(proc)
        instance.dispose()
    assert [r.tags["genepool/agent_type"] for r in instance.get_runs(dg.RunsFilter(job_name="generation_job"))] == [SD]
