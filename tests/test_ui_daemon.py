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
from tests.scale.procs import stop

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
    """SIGINT to the daemon's process group (its code server included); SIGKILL to what still runs 30 s later."""
    stop(proc, timeout=30, first=signal.SIGINT)


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


def _metrics_runs(instance: dg.DagsterInstance) -> list:
    return [r for r in instance.get_runs() if r.tags.get("genepool/trigger") == "trace_ingest"]


def _all_finished(runs: list) -> bool:
    return bool(runs) and all(r.is_finished for r in runs)


def _failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What the run's event log says went wrong (for an assertion message)."""
    out = []
    for rec in instance.all_logs(run_id):
        dagster_event = rec.dagster_event
        if dagster_event is not None and dagster_event.is_failure:
            out.append(f"{dagster_event.event_type_value}: {rec.message[:400]}")
    return out or ["(no failure event)"]


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


@pytest.mark.timeout(600)
def test_running_daemon_after_an_approval_runs_the_canary_refreshes_the_metrics_and_watches_the_agent(
        pg_server_url, tmp_path):
    """approval -> canary_sensor -> canary_job (production traces, source 'canary') -> trace_ingest_sensor ->
    dbt metrics -> metric_threshold_sensor requests a generation for the new production prompt: no Langfuse."""
    from genepool import approval
    from genepool.agents import get_agent
    from orchestration.canary import CANARY_SOURCE
    from tests.stub_llm_server import StubLLMServer

    db = Database(_new_database(pg_server_url, "gpc"))
    migrate(db.url)
    reg = PromptRegistry(db)
    seed = reg.register(SD, get_agent(SD).seed_genome)
    reg.label(seed.id, "production", "seed", "initial")
    child = reg.register(SD, seed.genome.with_(instructions=(*seed.genome.instructions, "Be brief.")),
                         parent_ids=[seed.id], generation=1, operator="add_instruction")
    reg.label(child.id, "candidate", "genepool", "test")
    approval.approve(db, child.id, "alice", "cheaper")  # the new production prompt has no trace at all

    dagster_url = _new_database(pg_server_url, "dagc").replace("postgresql://", "postgresql+psycopg2://", 1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(json.dumps({
        "storage": {"postgres": {"postgres_url": dagster_url}}, "telemetry": {"enabled": False},
    }))
    (home / "workspace.yaml").write_text(json.dumps({
        "load_from": [{"python_file": {"relative_path": str(ROOT / "tests" / "daemon_canary_location.py"),
                                       "working_directory": str(ROOT), "location_name": "daemon_canary"}}],
    }))
    instance = dg.DagsterInstance.from_config(str(home))
    log = home / "daemon.log"
    with StubLLMServer() as stub:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "GENEPOOL_"))},
            "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "stub-key",
            "GENEPOOL_TEST_DB_URL": db.url, "GENEPOOL_TEST_LLM_URL": stub.base_url,
            "GENEPOOL_THRESHOLDS": json.dumps({SD: {"min_success": 0.8, "min_runs": 5, "canary_items": 6,
                                                    "cooldown_minutes": 0}}),
        }
        proc = start_daemon(home, env)
        try:
            [gen] = _wait("the threshold sensor to request a generation after the canary",
                          lambda: instance.get_runs(dg.RunsFilter(job_name="generation_job")), 420, log)
            # stopping the daemon stops the runs it launched: let the metrics refreshes in flight finish first
            # (on a loaded machine the refresh that fed the threshold sensor may still be running its dbt tests)
            _wait("the metrics refreshes to finish", lambda: _all_finished(_metrics_runs(instance)), 180, log)
        finally:
            stop_daemon(proc)
    try:
        [canary] = instance.get_runs(dg.RunsFilter(job_name="canary_job"))
        assert canary.status == dg.DagsterRunStatus.SUCCESS and child.id in canary.tags["genepool/reason"]
        rows = db.fetchall("SELECT prompt_id, prompt_version, partition_key FROM genepool.traces WHERE source = %s",
                           (CANARY_SOURCE,))
        assert len(rows) == 6 and {tuple(r.values()) for r in rows} == {(child.id, child.version, None)}
        health = db.fetchone("SELECT * FROM genepool_metrics.agent_health WHERE agent_type = %s", (SD,))
        assert (health["production_prompt_id"], health["runs"], health["canary_runs"]) == (child.id, 6, 6)
        # the stub's echo answers fail the strict checkers: the new production prompt is unhealthy
        assert gen.tags["genepool/reason"] == "success 0.00 < 0.80"
        assert gen.tags["dagster/partition"] == f"{SD}|g0001"
        # the metrics were refreshed by trace_ingest_sensor's runs, and every one of them succeeded
        metrics = _metrics_runs(instance)
        failed = {r.run_id: _failure_messages(instance, r.run_id) for r in metrics
                  if r.status != dg.DagsterRunStatus.SUCCESS}
        assert metrics and not failed, failed
    finally:
        instance.dispose()
