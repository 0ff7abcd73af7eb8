"""Sensors evaluated for real: a DagsterInstance on PostgreSQL storage, the genepool database with
agent_health built by dbt from seeded traces, and the sensor functions called on real contexts."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import psycopg
import pytest

from assets.metrics import metrics_dbt_assets
from assets.partitions import (
    AGENTS,
    GENERATION_NUMBERS,
    add_partitions,
    dagster_key_of,
    generations_partitions,
    run_partition_tags,
)
from genepool import db as postgres
from genepool.core.genome import Genome
from genepool.db import Database, migrate
from genepool.registry import PromptRegistry
from orchestration.sensors import (
    ThresholdError,
    build_metric_threshold_sensor,
    metric_threshold_sensor,
    parse_thresholds,
    run_failure_recorder,
    trace_ingest_sensor,
)
from resources import PostgresResource
from resources.dbt import dbt_resource

SD, PL = "support-desk", "critic"  # two known agent types (the grid's agent keys)


def _new_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres._with_database(server_url, name)


def _add_traces(db: Database, agent: str, prompt_id: str, outcomes: list[bool], cost: float, start: int = 0):
    for i, ok in enumerate(outcomes, start):
        db.execute(
            "INSERT INTO genepool.traces (id, agent_type, prompt_id, input, output, success, prompt_tokens,"
            " completion_tokens, cost_usd, latency_ms) VALUES (%s,%s,%s,'q','a',%s,30,10,%s,%s)",
            (f"{agent}-{i:03d}", agent, prompt_id, ok, cost, 20.0 + i),
        )


def _seeded_db(pg_server_url) -> tuple[Database, dict]:
    db = Database(_new_database(pg_server_url, "sens"))
    migrate(db.url)
    reg = PromptRegistry(db)
    ids = {}
    for agent in (SD, PL):
        rec = reg.register(agent, Genome(role=f"You are the {agent} agent."))
        reg.label(rec.id, "production", "seed", "initial")
        ids[agent] = rec.id
    _add_traces(db, SD, ids[SD], [i % 4 != 0 for i in range(20)], cost=0.002)  # success 0.75
    _add_traces(db, PL, ids[PL], [True] * 6, cost=0.004)  # success 1.0
    _refresh_health(db)
    return db, ids


def _refresh_health(db: Database) -> None:
    dbt_resource(db.url).cli(["run", "--select", "agent_health"]).wait()


@pytest.fixture(scope="module")
def seeded(pg_server_url):
    return _seeded_db(pg_server_url)


@pytest.fixture
def instance(pg_server_url, tmp_path):
    """A real DagsterInstance whose run/event/schedule storage is a fresh PostgreSQL database."""
    url = _new_database(pg_server_url, "dagster")
    pg_url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(json.dumps({"storage": {"postgres": {"postgres_url": pg_url}}}))
    inst = dg.DagsterInstance.from_config(str(home))
    yield inst
    inst.dispose()


def _res(db: Database) -> dict:
    return {"postgres": PostgresResource(database_url=db.url)}


def _tick(sensor, instance, db, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=_res(db))
    return sensor(ctx)


def _apply(instance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's result: add the requested partitions (both dimensions)."""
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


SD_LOW = {SD: {"min_success": 0.8, "max_cost": 0.01}, PL: {"min_success": 0.8, "max_cost": 0.01}}


def test_fires_below_threshold_with_the_next_partition_key(seeded, instance):
    db, _ = seeded
    # generations started by hand: g0001 and g0002 of support-desk, g0007 of the critic
    for agent, key in ((SD, f"{SD}/g0001"), (SD, f"{SD}/g0002"), (PL, f"{PL}/g0007")):
        _gen_run(instance, agent, key, dg.DagsterRunStatus.SUCCESS, trigger="cli")
    add_partitions(instance, [f"{SD}/g0001", f"{SD}/g0002", f"{PL}/g0007"])
    result = _tick(build_metric_threshold_sensor({**SD_LOW, SD: {**SD_LOW[SD], "cooldown_minutes": 0}}), instance, db)
    assert isinstance(result, dg.SensorResult)
    [req] = result.run_requests
    assert (str(req.partition_key), req.partition_key.keys_by_dimension) == (
        f"{SD}|g0003", {"agent": SD, "generation": "g0003"})
    assert req.tags["genepool/reason"] == "success 0.75 < 0.80"
    # both dimensions of the new cell: the agent and the generation number
    assert [(a.partitions_def_name, list(a.partition_keys)) for a in result.dynamic_partitions_requests] == [
        (AGENTS, [SD]), (GENERATION_NUMBERS, ["g0003"])]
    cursor = json.loads(result.cursor)
    assert cursor[SD]["partition_key"] == f"{SD}/g0003" and PL not in cursor


def test_does_not_fire_twice_for_the_same_observation(seeded, instance):
    db, _ = seeded
    sensor = build_metric_threshold_sensor(SD_LOW)
    first = _tick(sensor, instance, db)
    _apply(instance, first)
    assert [r.partition_key for r in first.run_requests] == [f"{SD}|g0001"]
    again = _tick(sensor, instance, db, cursor=first.cursor)
    assert isinstance(again, dg.SkipReason)
    assert f"{SD}: success 0.75 < 0.80, but this observation already started {SD}/g0001" in again.skip_message
    # re-computing the metrics without new traces is the same observation
    _refresh_health(db)
    assert isinstance(_tick(sensor, instance, db, cursor=first.cursor), dg.SkipReason)


def test_skip_reason_when_healthy(seeded, instance):
    db, _ = seeded
    result = _tick(build_metric_threshold_sensor({"*": {"min_success": 0.7, "max_cost": 0.01}, SD: {}, PL: {}}),
                   instance, db)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == (
        f"{PL}: success 1.00 >= 0.70 and cost 0.004 <= 0.010; {SD}: success 0.75 >= 0.70 and cost 0.002 <= 0.010"
    )
    assert instance.get_dynamic_partitions(AGENTS) == instance.get_dynamic_partitions(GENERATION_NUMBERS) == []


def test_per_agent_thresholds(seeded, instance):
    db, _ = seeded
    # support-desk is fine at 0.7; the planner is too expensive for its own cost cap
    result = _tick(
        build_metric_threshold_sensor({"*": {"min_success": 0.7}, PL: {"max_cost": 0.003}}), instance, db
    )
    [req] = result.run_requests
    assert req.partition_key == f"{PL}|g0001"
    assert req.tags["genepool/reason"] == "cost 0.004 > 0.003"
    # too few traces for a strict min_runs: no action
    quiet = _tick(build_metric_threshold_sensor({SD: {"min_success": 0.9, "min_runs": 50}}), instance, db)
    assert isinstance(quiet, dg.SkipReason)
    assert f"{SD}: 20 recent production traces of the production prompt (< min_runs 50;" in quiet.skip_message
    assert f"{PL}: not opted in (add it to GENEPOOL_THRESHOLDS" in quiet.skip_message


def test_thresholds_from_the_environment(seeded, instance, monkeypatch):
    db, _ = seeded
    monkeypatch.setenv("GENEPOOL_THRESHOLDS", json.dumps({SD: {"min_success": 0.8, "max_cost": 0.01}}))
    result = _tick(metric_threshold_sensor, instance, db)
    assert [r.partition_key for r in result.run_requests] == [f"{SD}|g0001"]
    monkeypatch.setenv("GENEPOOL_THRESHOLDS", '{"support-desk": {"min_succes": 0.8}}')
    with pytest.raises(ThresholdError, match=r"unknown field\(s\) \['min_succes'\]"):
        _tick(metric_threshold_sensor, instance, db)


def test_waits_while_the_latest_generation_is_still_running(seeded, instance):
    db, _ = seeded
    add_partitions(instance, [f"{SD}/g0001"])
    run = instance.add_run(  # launched from the UI: partition tags only, no agent tag
        dg.DagsterRun(job_name="generation_job", status=dg.DagsterRunStatus.STARTED,
                      tags=run_partition_tags(f"{SD}/g0001"))
    )
    sensor = build_metric_threshold_sensor(SD_LOW)
    waiting = _tick(sensor, instance, db)
    assert isinstance(waiting, dg.SkipReason)
    assert f"run {run.run_id[:8]} for {SD}/g0001 is still running" in waiting.skip_message
    instance.report_run_canceled(run)
    # a cancelled generation is re-run (the same partition, resumed from the LLM cache), named in the reason
    fired = _tick(sensor, instance, db)
    [req] = fired.run_requests
    assert req.partition_key == f"{SD}|g0001"
    assert req.tags["genepool/reason"] == f"success 0.75 < 0.80; retry 1 of 2 after run {run.run_id[:8]} was cancelled"
    assert req.tags["genepool/retry"] == "1"


def test_new_observation_fires_again(pg_server_url, instance):
    db, ids = _seeded_db(pg_server_url)
    sensor = build_metric_threshold_sensor(SD_LOW)
    first = _tick(sensor, instance, db)
    _apply(instance, first)
    _add_traces(db, SD, ids[SD], [False, False], cost=0.002, start=100)  # new traces, still failing
    _refresh_health(db)
    second = _tick(sensor, instance, db, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == [f"{SD}|g0002"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert second.run_requests[0].tags["genepool/reason"] == f"success {15 / 22:.2f} < 0.80"


def test_skip_when_metrics_not_built_yet(db, instance):
    result = _tick(build_metric_threshold_sensor(SD_LOW), instance, db)
    assert isinstance(result, dg.SkipReason)
    assert "genepool_metrics.agent_health does not exist yet" in result.skip_message


def test_threshold_validation_names_the_field():
    with pytest.raises(ThresholdError, match="not valid JSON"):
        parse_thresholds("{support-desk: 0.8}")
    with pytest.raises(ThresholdError, match=r"\['support-desk'\]\.min_success=1.5 must be a number between 0 and 1"):
        parse_thresholds({SD: {"min_success": 1.5}})
    with pytest.raises(ThresholdError, match="max_cost=-1 must be a non-negative number"):
        parse_thresholds({SD: {"max_cost": -1}})
    t = parse_thresholds({"*": {"min_success": 0.6, "max_cost": 0.5}, SD: {"max_cost": 0.01}})
    assert (t[SD].min_success, t[SD].max_cost) == (0.6, 0.01)
    assert "*" not in t  # "*" gives default values; it opts no agent in


@dg.asset(partitions_def=generations_partitions)
def fails_for_test(context) -> None:
    raise RuntimeError(f"benchmark runner crashed on {context.partition_key}")


generation_job_for_test = dg.define_asset_job("generation_job", selection=[fails_for_test])


def test_definitions_load_with_the_sensors(seeded, instance):
    db, _ = seeded
    defs = dg.Definitions(
        assets=[fails_for_test, metrics_dbt_assets],
        jobs=[generation_job_for_test],
        sensors=[metric_threshold_sensor, trace_ingest_sensor, run_failure_recorder],
        resources={"postgres": PostgresResource(database_url=db.url), "dbt": dbt_resource(db.url)},
    )
    dg.Definitions.validate_loadable(defs)
    sensor = defs.get_sensor_def("metric_threshold_sensor")
    assert sensor.job_name == "generation_job"
    ctx = dg.build_sensor_context(instance=instance, definitions=defs, resources=_res(db))
    assert isinstance(sensor(ctx), (dg.SensorResult, dg.SkipReason))


def test_trace_ingest_sensor_requests_metrics_on_new_traces(pg_server_url, instance):
    db = Database(_new_database(pg_server_url, "ingest"))
    migrate(db.url)
    empty = _tick(trace_ingest_sensor, instance, db)
    assert isinstance(empty, dg.SkipReason)
    reg = PromptRegistry(db)
    p = reg.register(SD, Genome(role="You help."))
    _add_traces(db, SD, p.id, [True, False, True], cost=0.0)
    first = _tick(trace_ingest_sensor, instance, db)
    [req] = first.run_requests
    assert req.tags["genepool/new_traces"] == f"{SD}: +3"
    assert isinstance(_tick(trace_ingest_sensor, instance, db, cursor=first.cursor), dg.SkipReason)
    _add_traces(db, SD, p.id, [True], cost=0.0, start=10)
    second = _tick(trace_ingest_sensor, instance, db, cursor=first.cursor)
    assert second.run_requests[0].tags["genepool/new_traces"] == f"{SD}: +1"
    assert second.run_requests[0].run_key != req.run_key
    assert {k.to_user_string() for k in trace_ingest_sensor.asset_selection.resolve([metrics_dbt_assets])} == {
        "agent_prompt_metrics", "agent_health", "generation_front_stats", "promotion_history",
    }


def test_run_failure_recorder_stores_the_failed_run(db, instance):
    key = f"{SD}/g0004"
    add_partitions(instance, [key])
    job = dg.Definitions(assets=[fails_for_test], jobs=[generation_job_for_test]).resolve_job_def("generation_job")
    result = job.execute_in_process(instance=instance, partition_key=dagster_key_of(key), raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    [record] = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder",
        dagster_event=record.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"postgres": PostgresResource(database_url=db.url)},
    ).for_run_failure()
    run_failure_recorder(ctx)
    run_failure_recorder(ctx)  # idempotent
    rows = db.fetchall("SELECT * FROM genepool.run_failures")
    assert len(rows) == 1
    row = rows[0]
    assert (row["run_id"], row["job_name"], row["partition_key"], row["agent_type"]) == (
        result.run_id, "generation_job", key, SD,
    )
    assert f"RuntimeError: benchmark runner crashed on {SD}|g0004" in row["error"]
    assert row["failed_steps"] == ["fails_for_test"]
    end = instance.get_run_record_by_id(result.run_id).end_time
    assert abs(row["failed_at"].timestamp() - end) < 1e-3


# --- safety: opt-in, production traces only, cooldown, daily cap, bounded retries ------------------
def _gen_run(instance, agent: str, key: str, status, *, retry: int = 0, trigger: str = "metric_threshold"):
    tags = {**run_partition_tags(key), "genepool/agent_type": agent, "genepool/trigger": trigger}
    if retry:
        tags["genepool/retry"] = str(retry)
    return instance.add_run(dg.DagsterRun(job_name="generation_job", status=status, tags=tags))


def test_agents_absent_from_the_thresholds_are_never_optimised(seeded, instance):
    db, _ = seeded
    # support-desk (success 0.75) would breach 0.99, but it is not named; the planner is named and healthy
    result = _tick(build_metric_threshold_sensor({"*": {"min_success": 0.99}, PL: {}}), instance, db)
    assert isinstance(result, dg.SkipReason)
    assert f"{SD}: not opted in (add it to GENEPOOL_THRESHOLDS to have the sensor optimise it)" in result.skip_message
    assert f"{PL}: success 1.00 >= 0.99" in result.skip_message
    assert isinstance(_tick(build_metric_threshold_sensor({}), instance, db), dg.SkipReason)
    assert parse_thresholds(None) == {} and parse_thresholds("") == {}


def test_the_optimisers_own_traces_do_not_count_as_health(pg_server_url, instance):
    db = Database(_new_database(pg_server_url, "own"))
    migrate(db.url)
    reg = PromptRegistry(db)
    rec = reg.register(SD, Genome(role="You help."))
    reg.label(rec.id, "production", "seed", "initial")
    # 20 failing traces written by a generation (source 'runner' with its partition key): not production
    for i in range(20):
        db.execute(
            "INSERT INTO genepool.traces (id, agent_type, prompt_id, partition_key, source, input, output, success)"
            " VALUES (%s,%s,%s,%s,'runner','q','a',false)", (f"gen-{i}", SD, rec.id, f"{SD}/g0001"),
        )
    _refresh_health(db)
    sensor = build_metric_threshold_sensor({SD: {"min_success": 0.8}})
    quiet = _tick(sensor, instance, db)
    assert isinstance(quiet, dg.SkipReason)
    assert f"{SD}: 0 recent production traces" in quiet.skip_message
    # genepool's own experiment runs read back from Langfuse (metadata names the experiment) do not count
    for i in range(20):
        db.execute(
            "INSERT INTO genepool.traces (id, agent_type, prompt_id, partition_key, source, input, output, success,"
            " metadata) VALUES (%s,%s,%s,%s,'langfuse','q','a',false, %s)",
            (f"exp-{i}", SD, rec.id, f"{SD}/g0001", '{"observation": {"experiment_id": "support-desk/g0001"}}'),
        )
    _refresh_health(db)
    assert f"{SD}: 0 recent production traces" in _tick(sensor, instance, db).skip_message
    # production traces (ingested from Langfuse) do count
    for i in range(6):
        db.execute(
            "INSERT INTO genepool.traces (id, agent_type, prompt_id, source, input, output, success)"
            " VALUES (%s,%s,%s,'langfuse','q','a',%s)", (f"lf-{i}", SD, rec.id, i < 3),
        )
    _refresh_health(db)
    [req] = _tick(sensor, instance, db).run_requests
    assert req.tags["genepool/reason"] == "success 0.50 < 0.80"


def test_cooldown_and_daily_cap(seeded, instance):
    db, _ = seeded
    add_partitions(instance, [f"{SD}/g0001", f"{SD}/g0002"])
    _gen_run(instance, SD, f"{SD}/g0001", dg.DagsterRunStatus.SUCCESS)
    cool = _tick(build_metric_threshold_sensor({SD: {"cooldown_minutes": 30}}), instance, db)
    assert isinstance(cool, dg.SkipReason)
    assert f"{SD}: success 0.75 < 0.80, but its last generation started 0 min ago (cooldown_minutes 30)" in (
        cool.skip_message
    )
    _gen_run(instance, SD, f"{SD}/g0002", dg.DagsterRunStatus.SUCCESS)
    capped = _tick(build_metric_threshold_sensor({SD: {"cooldown_minutes": 0, "max_generations_per_day": 2}}),
                   instance, db)
    assert isinstance(capped, dg.SkipReason)
    assert "already started 2 generations in the last 24 h (max_generations_per_day 2)" in capped.skip_message
    # runs started by a person (CLI/UI) do not use up the sensor's daily cap, but do count for the cooldown
    fires = _tick(build_metric_threshold_sensor({SD: {"cooldown_minutes": 0, "max_generations_per_day": 3}}),
                  instance, db)
    assert [r.partition_key for r in fires.run_requests] == [f"{SD}|g0003"]


def test_failed_generation_is_retried_up_to_the_limit_then_named(seeded, instance):
    db, _ = seeded
    key = f"{SD}/g0001"
    add_partitions(instance, [key])
    sensor = build_metric_threshold_sensor({SD: {"cooldown_minutes": 0, "max_retries": 1}})
    first = _gen_run(instance, SD, key, dg.DagsterRunStatus.FAILURE)
    [req] = _tick(sensor, instance, db).run_requests
    assert (req.partition_key, req.tags["genepool/retry"]) == (f"{SD}|g0001", "1")
    assert req.tags["genepool/reason"].endswith(f"retry 1 of 1 after run {first.run_id[:8]} failed")
    again = _gen_run(instance, SD, key, dg.DagsterRunStatus.FAILURE, retry=1)
    out = _tick(sensor, instance, db)
    assert isinstance(out, dg.SkipReason)
    assert (f"{SD}: success 0.75 < 0.80, but run {again.run_id[:8]} for {key} failed and 1 retry (max_retries 1)"
            " are used up: see genepool.run_failures") in out.skip_message


def test_sensor_defaults():
    assert run_failure_recorder.default_status == dg.DefaultSensorStatus.RUNNING
    assert trace_ingest_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert metric_threshold_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    with pytest.raises(ThresholdError, match=r"max_generations_per_day=0 must be a whole number >= 1"):
        parse_thresholds({SD: {"max_generations_per_day": 0}})


def test_an_agent_that_is_not_a_known_agent_type_gets_no_partition(pg_server_url, instance):
    """agent_health lists every agent with prompts; one that is not a known agent type (no definition) is
    named in the skip reason, and no partition of it is added (no free-text junk in the grid)."""
    db = Database(_new_database(pg_server_url, "sens"))
    migrate(db.url)
    reg = PromptRegistry(db)
    rec = reg.register("planner", Genome(role="You are the planner agent."))
    reg.label(rec.id, "production", "seed", "initial")
    _add_traces(db, "planner", rec.id, [False] * 20, cost=0.001)
    _refresh_health(db)
    out = _tick(build_metric_threshold_sensor({"planner": {"cooldown_minutes": 0}}), instance, db)
    assert isinstance(out, dg.SkipReason)
    assert ("planner: success 0.00 < 0.80, but partition planner|g0001: agent 'planner' is not a known agent type;"
            " use one of ") in out.skip_message
    assert instance.get_dynamic_partitions(AGENTS) == []
