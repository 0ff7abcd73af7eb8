"""Sensors: start a generation when an agent's production metrics fall below its thresholds,
refresh the dbt metrics when new traces arrive, and record failed runs for re-running.

- ``metric_threshold_sensor`` reads ``genepool_metrics.agent_health`` (the dbt model) and, per agent
  whose success rate is below ``min_success`` or average cost above ``max_cost``, adds the next
  ``generations`` partition (``<agent>/gNNNN``) and requests a run of ``generation_job`` for it.
  Its cursor remembers, per agent, the observation it acted on, so one observation fires once.
- ``trace_ingest_sensor`` requests a materialisation of the dbt metrics assets when an agent has
  traces the cursor has not seen.
- ``run_failure_recorder`` writes every failed run into ``genepool.run_failures``.

All of them use the ``postgres`` resource (``PostgresResource``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import psycopg

from resources import PostgresResource
from assets.partitions import (
    GENERATIONS,
    generations_of,
    generations_partitions,
    next_partition_key,
    parse_partition_key,
    partition_key,
)
from genepool.db import Database

GENERATION_JOB = "generation_job"
THRESHOLDS_ENV = "GENEPOOL_THRESHOLDS"
DB_RESOURCE_KEY = "postgres"
AGENT_HEALTH = "genepool_metrics.agent_health"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
_STATUS_WORDS = {dg.DagsterRunStatus.STARTED: "running", dg.DagsterRunStatus.NOT_STARTED: "not started"}


# --- thresholds -----------------------------------------------------------------------------------
class ThresholdError(ValueError):
    """Bad threshold configuration; the message names the field and how to fix it."""


@dataclass(frozen=True)
class Thresholds:
    min_success: float = 0.8
    max_cost: float | None = None  # average USD per trace; None = no cost limit
    min_runs: int = 5  # fewer recent traces than this is too little evidence to act on


_FIELDS = {"min_success", "max_cost", "min_runs"}


def _thresholds_from(agent: str, spec: Any, base: Thresholds) -> Thresholds:
    where = f"{THRESHOLDS_ENV}[{agent!r}]"
    if not isinstance(spec, dict):
        raise ThresholdError(f"{where} must be an object like {{\"min_success\": 0.8, \"max_cost\": 0.01}}")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ThresholdError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    values = {"min_success": base.min_success, "max_cost": base.max_cost, "min_runs": base.min_runs, **spec}
    ms, mc, mr = values["min_success"], values["max_cost"], values["min_runs"]
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0.0 <= ms <= 1.0:
        raise ThresholdError(f"{where}.min_success={ms!r} must be a number between 0 and 1 (a success rate)")
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, (int, float)) or mc < 0 or math.isnan(mc)):
        raise ThresholdError(f"{where}.max_cost={mc!r} must be a non-negative number (USD per trace) or null")
    if isinstance(mr, bool) or not isinstance(mr, int) or mr < 1:
        raise ThresholdError(f"{where}.min_runs={mr!r} must be a whole number >= 1")
    return Thresholds(float(ms), None if mc is None else float(mc), mr)


def parse_thresholds(config: str | dict | None) -> dict[str, Thresholds]:
    """Per-agent thresholds from JSON text or a dict; the key "*" sets the default for other agents.

    Example: ``{"*": {"min_success": 0.7}, "support-desk": {"min_success": 0.8, "max_cost": 0.01}}``.
    """
    if config is None or config == "":
        return {"*": Thresholds()}
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ThresholdError(
                f"{THRESHOLDS_ENV} is not valid JSON ({exc}); use e.g. "
                '{"support-desk": {"min_success": 0.8, "max_cost": 0.01}}'
            ) from None
    if not isinstance(config, dict):
        raise ThresholdError(f"{THRESHOLDS_ENV} must be a JSON object mapping agent type -> thresholds")
    default = _thresholds_from("*", config["*"], Thresholds()) if "*" in config else Thresholds()
    out = {"*": default}
    for agent, spec in config.items():
        if agent != "*":
            out[agent] = _thresholds_from(agent, spec, default)
    return out


def thresholds_for(table: dict[str, Thresholds], agent_type: str) -> Thresholds:
    return table.get(agent_type) or table.get("*") or Thresholds()


# --- metric threshold sensor ----------------------------------------------------------------------
def _fmt_cost(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _run_in_progress(instance: dg.DagsterInstance, key: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/partition": key}, statuses=IN_PROGRESS), limit=1
    )
    return runs[0] if runs else None


def evaluate_metric_thresholds(
    context: dg.SensorEvaluationContext, db: Database, thresholds: dict[str, Thresholds]
) -> dg.SensorResult | dg.SkipReason:
    """The body of the metric-threshold sensor (separate so it can be reused with other thresholds)."""
    try:
        rows = db.fetchall(
            f"SELECT agent_type, production_prompt_id, runs, success_rate, avg_cost_usd, p95_latency_ms,"
            f" observation_id, last_trace_at, computed_at FROM {AGENT_HEALTH} ORDER BY agent_type"
        )
    except psycopg.errors.UndefinedTable:
        return dg.SkipReason(
            f"{AGENT_HEALTH} does not exist yet: materialise the dbt metrics assets (group 'metrics') first"
        )
    if not rows:
        return dg.SkipReason(f"{AGENT_HEALTH} is empty: no agent has prompts or traces yet")

    cursor: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
    existing = list(context.instance.get_dynamic_partitions(GENERATIONS))
    new_keys: list[str] = []
    run_requests: list[dg.RunRequest] = []
    reasons: list[str] = []

    for row in rows:
        agent = row["agent_type"]
        th = thresholds_for(thresholds, agent)
        if row["production_prompt_id"] is None:
            reasons.append(f"{agent}: no production prompt")
            continue
        runs, success, cost = row["runs"], row["success_rate"], row["avg_cost_usd"]
        if runs < th.min_runs or success is None:
            reasons.append(f"{agent}: {runs} recent traces of the production prompt (< min_runs {th.min_runs})")
            continue
        breaches = []
        if success < th.min_success:
            breaches.append(f"success {success:.2f} < {th.min_success:.2f}")
        if th.max_cost is not None and cost is not None and cost > th.max_cost:
            breaches.append(f"cost {_fmt_cost(cost)} > {th.max_cost:.3f}")
        if not breaches:
            cost_part = "no cost limit" if th.max_cost is None else f"cost {_fmt_cost(cost)} <= {th.max_cost:.3f}"
            reasons.append(f"{agent}: success {success:.2f} >= {th.min_success:.2f} and {cost_part}")
            continue
        oid = row["observation_id"]
        acted = cursor.get(agent, {})
        if acted.get("observation_id") == oid:
            reasons.append(
                f"{agent}: {' and '.join(breaches)}, but this observation already started {acted.get('partition_key')};"
                " waiting for new traces"
            )
            continue
        gens = generations_of(existing + new_keys, agent)
        if gens:
            latest = partition_key(agent, gens[-1])
            busy = _run_in_progress(context.instance, latest)
            if busy is not None:
                reasons.append(
                    f"{agent}: {' and '.join(breaches)}, but run {busy.run_id[:8]} for {latest} is still"
                    f" {_STATUS_WORDS.get(busy.status, busy.status.value.lower())}"
                )
                continue
        key = next_partition_key(existing + new_keys, agent)
        new_keys.append(key)
        why = " and ".join(breaches)
        run_requests.append(
            dg.RunRequest(
                partition_key=key,
                run_key=f"{key}@{oid}",
                tags={
                    "genepool/trigger": "metric_threshold",
                    "genepool/agent_type": agent,
                    "genepool/observation_id": oid,
                    "genepool/reason": why,
                },
            )
        )
        cursor[agent] = {
            "observation_id": oid,
            "partition_key": key,
            "last_trace_at": row["last_trace_at"].isoformat() if row["last_trace_at"] else None,
            "reason": why,
        }
        context.log.info(f"{agent}: {why} -> starting generation {key}")

    if not run_requests:
        return dg.SkipReason("; ".join(reasons))
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[generations_partitions.build_add_request(new_keys)],
        cursor=json.dumps(cursor, sort_keys=True),
    )


def build_metric_threshold_sensor(
    thresholds: str | dict | None = None,
    *,
    name: str = "metric_threshold_sensor",
    job_name: str = GENERATION_JOB,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A metric-threshold sensor. ``thresholds`` None = read GENEPOOL_THRESHOLDS at each tick."""
    fixed = parse_thresholds(thresholds) if thresholds is not None else None

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Starts a generation for an agent whose production success rate or cost crosses its threshold"
        " (genepool_metrics.agent_health; thresholds from GENEPOOL_THRESHOLDS).",
    )
    def _sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
        table = fixed if fixed is not None else parse_thresholds(os.environ.get(THRESHOLDS_ENV))
        db = postgres.database()
        return evaluate_metric_thresholds(context, db, table)

    return _sensor


metric_threshold_sensor = build_metric_threshold_sensor()


# --- trace ingest sensor --------------------------------------------------------------------------
def build_trace_ingest_sensor(
    asset_selection: dg.AssetSelection | None = None,
    *,
    name: str = "trace_ingest_sensor",
    minimum_interval_seconds: int = 300,
) -> dg.SensorDefinition:
    """Requests the dbt metrics assets when some agent has traces the cursor has not seen.

    The cursor is ``{agent: {"count": n, "last": iso timestamp}}`` from ``genepool.traces``.
    """
    if asset_selection is None:
        from assets.metrics import metrics_asset_selection

        asset_selection = metrics_asset_selection

    @dg.sensor(
        name=name,
        asset_selection=asset_selection,
        minimum_interval_seconds=minimum_interval_seconds,
        description="Refreshes the dbt metrics when new traces arrive in genepool.traces.",
    )
    def _sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
        db = postgres.database()
        rows = db.fetchall(
            "SELECT agent_type, count(*) AS n, max(created_at) AS last FROM genepool.traces"
            " GROUP BY agent_type ORDER BY agent_type"
        )
        seen: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
        now = {r["agent_type"]: {"count": r["n"], "last": r["last"].isoformat()} for r in rows}
        changed = {
            a: v["count"] - seen.get(a, {}).get("count", 0) for a, v in now.items() if v != seen.get(a)
        }
        if not changed:
            total = sum(v["count"] for v in now.values())
            return dg.SkipReason(f"no new traces since the last metrics refresh ({total} traces, {len(now)} agents)")
        digest = hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()[:16]
        summary = ", ".join(f"{a}: {'+' if d >= 0 else ''}{d}" for a, d in sorted(changed.items()))
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"metrics@{digest}", tags={"genepool/trigger": "trace_ingest", "genepool/new_traces": summary})
            ],
            cursor=json.dumps(now, sort_keys=True),
        )

    return _sensor


trace_ingest_sensor = build_trace_ingest_sensor()


# --- run failure recorder -------------------------------------------------------------------------
def record_run_failure(db: Database, context: dg.RunFailureSensorContext) -> dict:
    """Insert the failed run into genepool.run_failures (idempotent on run_id); returns the row."""
    run = context.dagster_run
    pkey = run.tags.get("dagster/partition")
    agent = None
    if pkey:
        try:
            agent = parse_partition_key(pkey)[0]
        except ValueError:
            agent = None
    messages = [context.failure_event.message or "run failed"]
    steps = []
    for ev in context.get_step_failure_events():
        steps.append(ev.step_key or "")
        err = ev.step_failure_data.error if ev.step_failure_data else None
        while err is not None and err.cause is not None:  # the user's exception, not Dagster's wrapper
            err = err.cause
        if err is not None:
            messages.append(f"{ev.step_key}: {err.cls_name}: {err.message.strip()}")
    record = context.instance.get_run_record_by_id(run.run_id)
    end = record.end_time if record is not None and record.end_time else datetime.now(timezone.utc).timestamp()
    failed_at = datetime.fromtimestamp(end, timezone.utc)
    row = {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "partition_key": pkey,
        "agent_type": agent,
        "error": "\n".join(messages)[:20000],
        "failed_steps": steps,
        "failed_at": failed_at,
    }
    db.execute(
        "INSERT INTO genepool.run_failures (run_id, job_name, partition_key, agent_type, error, failed_steps, failed_at)"
        " VALUES (%(run_id)s, %(job_name)s, %(partition_key)s, %(agent_type)s, %(error)s, %(failed_steps)s, %(failed_at)s)"
        " ON CONFLICT (run_id) DO NOTHING",
        row,
    )
    return row


@dg.run_failure_sensor(
    name="run_failure_recorder",
    minimum_interval_seconds=30,
    description="Records failed runs (run id, partition, error) in genepool.run_failures so they can be re-run.",
)
def run_failure_recorder(context: dg.RunFailureSensorContext, postgres: PostgresResource):
    row = record_run_failure(postgres.database(), context)
    context.log.info(f"recorded failed run {row['run_id']} ({row['job_name']}, partition {row['partition_key']})")


__all__ = [
    "GENERATION_JOB",
    "ThresholdError",
    "Thresholds",
    "build_metric_threshold_sensor",
    "build_trace_ingest_sensor",
    "evaluate_metric_thresholds",
    "metric_threshold_sensor",
    "parse_thresholds",
    "record_run_failure",
    "run_failure_recorder",
    "thresholds_for",
    "trace_ingest_sensor",
]
