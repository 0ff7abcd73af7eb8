"""Sensors: start a generation when an agent's production metrics fall below its thresholds,
refresh the dbt metrics when new traces arrive, and record failed runs for re-running.

- ``metric_threshold_sensor`` reads ``genepool_metrics.agent_health`` (the dbt model) and, per agent
  whose success rate is below ``min_success`` or average cost above ``max_cost``, adds the agent and the
  next generation number to the agent × generation partitions (assets/partitions.py) and requests a run of
  ``generation_job`` for that cell (``<agent>|gNNNN``; the library's key ``<agent>/gNNNN`` in messages).
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
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import psycopg

from assets.partitions import (
    PARTITION_TAG,
    InvalidPartition,
    add_requests,
    dagster_key_of,
    library_key_of_tags,
    next_generation_key,
    parse_partition_key,
    partition_key,
    started_generations,
)
from genepool.db import Database
from orchestration.sweep import sweep_dead_runs
from resources import PostgresResource

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
TRIGGER_TAG = "genepool/trigger"
AGENT_TAG = "genepool/agent_type"
RETRY_TAG = "genepool/retry"
_STATUS_WORDS = {dg.DagsterRunStatus.STARTED: "running", dg.DagsterRunStatus.NOT_STARTED: "not started"}


# --- thresholds -----------------------------------------------------------------------------------
class ThresholdError(ValueError):
    """Bad threshold configuration; the message names the field and how to fix it."""


@dataclass(frozen=True)
class Thresholds:
    min_success: float = 0.8
    max_cost: float | None = None  # average USD per trace; None = no cost limit
    min_runs: int = 5  # fewer recent production traces than this is too little evidence to act on
    cooldown_minutes: float = 60.0  # no new generation of an agent sooner than this after its last one started
    max_generations_per_day: int = 4  # generations started by the sensor per agent in the last 24 hours
    max_retries: int = 2  # re-runs of a failed or cancelled generation before the sensor gives up on it
    canary_items: int = 20  # train items the canary runs each new production prompt on (orchestration/canary.py)


_FIELDS = {f for f in Thresholds.__dataclass_fields__}
EXAMPLE = '{"support-desk": {"min_success": 0.8, "max_cost": 0.01}}'


def _number(where: str, name: str, v: Any, *, lo: float, hi: float | None = None, integer: bool = False) -> None:
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
    ok = ok and not (isinstance(v, float) and math.isnan(v)) and v >= lo and (hi is None or v <= hi)
    if not ok:
        kind = "a whole number" if integer else "a number"
        rng = f"between {lo:g} and {hi:g}" if hi is not None else f">= {lo:g}"
        raise ThresholdError(f"{where}.{name}={v!r} must be {kind} {rng}")


def _thresholds_from(agent: str, spec: Any, base: Thresholds) -> Thresholds:
    where = f"{THRESHOLDS_ENV}[{agent!r}]"
    if not isinstance(spec, dict):
        raise ThresholdError(f"{where} must be an object like {{\"min_success\": 0.8, \"max_cost\": 0.01}}")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ThresholdError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    values = {**base.__dict__, **spec}
    _number(where, "min_success", values["min_success"], lo=0.0, hi=1.0)
    mc = values["max_cost"]
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, (int, float)) or mc < 0 or math.isnan(mc)):
        raise ThresholdError(f"{where}.max_cost={mc!r} must be a non-negative number (USD per trace) or null")
    _number(where, "min_runs", values["min_runs"], lo=1, integer=True)
    _number(where, "cooldown_minutes", values["cooldown_minutes"], lo=0.0)
    _number(where, "max_generations_per_day", values["max_generations_per_day"], lo=1, integer=True)
    _number(where, "max_retries", values["max_retries"], lo=0, integer=True)
    _number(where, "canary_items", values["canary_items"], lo=0, hi=1000, integer=True)
    return Thresholds(
        min_success=float(values["min_success"]),
        max_cost=None if mc is None else float(mc),
        min_runs=values["min_runs"],
        cooldown_minutes=float(values["cooldown_minutes"]),
        max_generations_per_day=values["max_generations_per_day"],
        max_retries=values["max_retries"],
        canary_items=values["canary_items"],
    )


def parse_thresholds(config: str | dict | None) -> dict[str, Thresholds]:
    """Per-agent thresholds from JSON text or a dict. Opt-in: only the agents named are ever optimised
    by the sensor; the key "*" sets default *values* for the named agents (it opts no agent in).

    Example: ``{"*": {"min_success": 0.7}, "support-desk": {"max_cost": 0.01}, "critic": {}}``.
    """
    if config is None or config == "":
        return {}
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ThresholdError(f"{THRESHOLDS_ENV} is not valid JSON ({exc}); use e.g. {EXAMPLE}") from None
    if not isinstance(config, dict):
        raise ThresholdError(f"{THRESHOLDS_ENV} must be a JSON object mapping agent type -> thresholds, e.g. {EXAMPLE}")
    default = _thresholds_from("*", config["*"], Thresholds()) if "*" in config else Thresholds()
    out = {}
    for agent, spec in config.items():
        if agent != "*":
            out[agent] = _thresholds_from(agent, spec, default)
    return out


def thresholds_for(table: dict[str, Thresholds], agent_type: str) -> Thresholds | None:
    """The agent's thresholds, or None when it is not opted in."""
    return table.get(agent_type)


# --- metric threshold sensor ----------------------------------------------------------------------
def _fmt_cost(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _agent_runs(instance: dg.DagsterInstance, job_name: str, agent: str, latest_key: str | None,
                since: datetime | None = None, limit: int = 200) -> list[dg.RunRecord]:
    """Runs of the generation job for one agent, newest first: runs tagged with the agent, plus any run
    of its latest partition (e.g. launched by hand from the UI without the agent tag)."""
    found: dict[str, dg.DagsterRun] = {}
    filters = [dg.RunsFilter(job_name=job_name, tags={AGENT_TAG: agent}, created_after=since)]
    if latest_key:
        filters.append(dg.RunsFilter(job_name=job_name, tags={PARTITION_TAG: str(dagster_key_of(latest_key))},
                                     created_after=since))
    for f in filters:
        for r in instance.get_run_records(filters=f, limit=limit):
            found[r.dagster_run.run_id] = r
    return sorted(found.values(), key=lambda r: r.create_timestamp, reverse=True)


def _canary_note(row: dict, th: Thresholds) -> str:
    """How many of the agent's counted traces the canary made (orchestration/canary.py), for the skip reason."""
    version = row.get("production_prompt_version")
    of = f"v{version}" if version else "the production prompt"
    if th.canary_items == 0:
        return "canary off (canary_items 0)"
    n = row.get("canary_runs")
    if n is None:
        return "canary: unknown until the dbt metrics are refreshed"
    if n == 0:
        return f"no canary traces of {of} yet (canary_job runs after an approval)"
    return f"{n} of them from the canary of {of} ({th.canary_items} train items)"


def evaluate_metric_thresholds(
    context: dg.SensorEvaluationContext,
    db: Database,
    thresholds: dict[str, Thresholds],
    *,
    job_name: str = GENERATION_JOB,
    now: datetime | None = None,
) -> dg.SensorResult | dg.SkipReason:
    """The body of the metric-threshold sensor (separate so it can be reused with other thresholds).

    Per agent, in this order: opted in? production prompt? enough production traces? a breach? Then:
    a generation of the agent still running -> wait; its latest generation failed or was cancelled ->
    re-run that partition (up to ``max_retries``, named in the reason); this observation already acted on
    -> wait for new production traces; cooldown and daily cap; else the next partition.
    """
    now = now or datetime.now(UTC)
    try:
        # every column: canary_runs exists only once the metrics were refreshed by this version's dbt model
        rows = db.fetchall(f"SELECT * FROM {AGENT_HEALTH} ORDER BY agent_type")
    except psycopg.errors.UndefinedTable:
        return dg.SkipReason(
            f"{AGENT_HEALTH} does not exist yet: materialise the dbt metrics assets (group 'metrics') first"
        )
    if not rows:
        return dg.SkipReason(f"{AGENT_HEALTH} is empty: no agent has prompts or traces yet")

    cursor: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
    new_keys: list[str] = []
    run_requests: list[dg.RunRequest] = []
    reasons: list[str] = []

    for row in rows:
        agent = row["agent_type"]
        th = thresholds_for(thresholds, agent)
        if th is None:
            reasons.append(f"{agent}: not opted in (add it to {THRESHOLDS_ENV} to have the sensor optimise it)")
            continue
        if row["production_prompt_id"] is None:
            reasons.append(f"{agent}: no production prompt")
            continue
        runs, success, cost = row["runs"], row["success_rate"], row["avg_cost_usd"]
        canary = _canary_note(row, th)
        if runs < th.min_runs or success is None:
            reasons.append(
                f"{agent}: {runs} recent production traces of the production prompt (< min_runs {th.min_runs};"
                f" the optimiser's own traces do not count; {canary})"
            )
            continue
        breaches = []
        if success < th.min_success:
            breaches.append(f"success {success:.2f} < {th.min_success:.2f}")
        if th.max_cost is not None and cost is not None and cost > th.max_cost:
            breaches.append(f"cost {_fmt_cost(cost)} > {th.max_cost:.3f}")
        if not breaches:
            cost_part = "no cost limit" if th.max_cost is None else f"cost {_fmt_cost(cost)} <= {th.max_cost:.3f}"
            n_canary = row.get("canary_runs") or 0
            from_canary = f" ({n_canary} of {runs} traces from the canary)" if n_canary else ""
            reasons.append(f"{agent}: success {success:.2f} >= {th.min_success:.2f} and {cost_part}{from_canary}")
            continue
        why = " and ".join(breaches)
        oid = row["observation_id"]
        acted = cursor.get(agent, {})
        try:
            dagster_key_of(partition_key(agent, 1))  # a known agent type (the grid's agent dimension)
        except (InvalidPartition, ValueError) as exc:
            reasons.append(f"{agent}: {why}, but {exc}")
            continue
        gens = started_generations(context.instance, db, agent)
        latest = partition_key(agent, gens[-1]) if gens else None
        records = _agent_runs(context.instance, job_name, agent, latest)
        history = [r.dagster_run for r in records]
        created = {r.dagster_run.run_id: r.create_timestamp for r in records}
        busy = next((r for r in history if r.status in IN_PROGRESS), None)
        if busy is not None:
            reasons.append(
                f"{agent}: {why}, but run {busy.run_id[:8]} for {library_key_of_tags(busy.tags)} is still"
                f" {_STATUS_WORDS.get(busy.status, busy.status.value.lower())}"
            )
            continue
        last = history[0] if history else None
        if last is not None and last.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            key = library_key_of_tags(last.tags) or latest
            word = "failed" if last.status == dg.DagsterRunStatus.FAILURE else "was cancelled"
            tries = [r for r in history if library_key_of_tags(r.tags) == key]
            retries_done = sum(1 for r in tries if r.tags.get(RETRY_TAG)) if key else th.max_retries
            if key is None or retries_done >= th.max_retries:
                reasons.append(
                    f"{agent}: {why}, but run {last.run_id[:8]} for {key} {word} and {retries_done} retr"
                    f"{'y' if retries_done == 1 else 'ies'} (max_retries {th.max_retries}) are used up: see"
                    f" genepool.run_failures, fix the cause and re-run {key} by hand"
                )
                continue
            n = retries_done + 1
            run_requests.append(dg.RunRequest(
                partition_key=dagster_key_of(key),
                run_key=f"{key}@{oid}#retry{n}@{last.run_id}",
                tags={TRIGGER_TAG: "metric_threshold", AGENT_TAG: agent, "genepool/observation_id": oid or "",
                      "genepool/reason": f"{why}; retry {n} of {th.max_retries} after run {last.run_id[:8]} {word}",
                      RETRY_TAG: str(n)},
            ))
            context.log.info(f"{agent}: run {last.run_id[:8]} for {key} {word} -> retry {n} of {th.max_retries}")
            cursor[agent] = {**acted, "observation_id": oid, "partition_key": key, "reason": why}
            continue
        if acted.get("observation_id") == oid:
            reasons.append(
                f"{agent}: {why}, but this observation already started {acted.get('partition_key')};"
                " waiting for new production traces (or an approved candidate)"
            )
            continue
        if last is not None and th.cooldown_minutes > 0:
            age = (now - created[last.run_id]).total_seconds() / 60
            if age < th.cooldown_minutes:
                reasons.append(
                    f"{agent}: {why}, but its last generation started {age:.0f} min ago"
                    f" (cooldown_minutes {th.cooldown_minutes:g})"
                )
                continue
        day = [r for r in history if r.tags.get(TRIGGER_TAG) == "metric_threshold" and not r.tags.get(RETRY_TAG)
               and (now - created[r.run_id]).total_seconds() < 86400]
        if len(day) >= th.max_generations_per_day:
            reasons.append(
                f"{agent}: {why}, but the sensor already started {len(day)} generations in the last 24 h"
                f" (max_generations_per_day {th.max_generations_per_day})"
            )
            continue
        # after every generation started (experiments, runs) and the one this sensor last requested
        key = next_generation_key(context.instance, db, agent,
                                  also=new_keys + [k for k in [acted.get("partition_key")] if k])
        new_keys.append(key)
        run_requests.append(
            dg.RunRequest(
                partition_key=dagster_key_of(key),
                run_key=f"{key}@{oid}",
                tags={
                    TRIGGER_TAG: "metric_threshold",
                    AGENT_TAG: agent,
                    "genepool/observation_id": oid or "",
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

    for r in reasons:
        context.log.info(r)
    if not run_requests:
        return dg.SkipReason("; ".join(reasons))
    return dg.SensorResult(
        run_requests=run_requests,
        # both dimensions of the new cells: the agent (if new) and the generation number (if new)
        dynamic_partitions_requests=add_requests(new_keys) or None,
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
        description="Starts a generation for an opted-in agent whose production success rate or cost crosses its"
        " threshold (genepool_metrics.agent_health, production traces only; GENEPOOL_THRESHOLDS), with a cooldown,"
        " a daily cap and bounded retries of failed or cancelled generations.",
    )
    def _sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
        table = fixed if fixed is not None else parse_thresholds(os.environ.get(THRESHOLDS_ENV))
        db = postgres.database()
        # a run whose process died stays STARTED for ever and would block its agent: fail and record it first
        sweep_dead_runs(context.instance, db, log=context.log)
        return evaluate_metric_thresholds(context, db, table, job_name=job_name)

    return _sensor


metric_threshold_sensor = build_metric_threshold_sensor()


# --- trace ingest sensor --------------------------------------------------------------------------
def build_trace_ingest_sensor(
    asset_selection: dg.AssetSelection | None = None,
    *,
    name: str = "trace_ingest_sensor",
    minimum_interval_seconds: int = 120,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """Requests the dbt metrics assets when some agent has traces the cursor has not seen, a registry
    event happened (e.g. an approval) or a generation finished, so the threshold sensor never reads
    stale numbers. On by default (it only refreshes metrics; it never starts a generation).

    The cursor is ``{agent: {"count": n, "last": iso timestamp}}`` from ``genepool.traces``.
    """
    if asset_selection is None:
        from assets.metrics import metrics_asset_selection

        asset_selection = metrics_asset_selection

    @dg.sensor(
        name=name,
        asset_selection=asset_selection,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Refreshes the dbt metrics when new traces arrive in genepool.traces, after an approval or"
        " rejection, and after each finished generation.",
    )
    def _sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
        db = postgres.database()
        rows = db.fetchall(
            "SELECT agent_type, count(*) AS n, max(created_at) AS last FROM genepool.traces"
            " GROUP BY agent_type ORDER BY agent_type"
        )
        # registry events (an approval changes the production prompt agent_health reads) and finished
        # generations (front_members) also make the metrics stale
        marks = db.fetchone(
            "SELECT (SELECT coalesce(max(id), 0) FROM genepool.prompt_events) AS events,"
            " (SELECT count(DISTINCT experiment_id) FROM genepool.front_members) AS generations"
        )
        seen: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
        now: dict[str, Any] = {r["agent_type"]: {"count": r["n"], "last": r["last"].isoformat()} for r in rows}
        changed = {
            a: v["count"] - (seen.get(a) or {}).get("count", 0) for a, v in now.items() if v != seen.get(a)
        }
        summary = ", ".join(f"{a}: {'+' if d >= 0 else ''}{d}" for a, d in sorted(changed.items()))
        other = []
        if int(marks["events"]) != int(seen.get("@events", 0)):
            other.append("registry events")
        if int(marks["generations"]) != int(seen.get("@generations", 0)):
            other.append("finished generations")
        now["@events"], now["@generations"] = int(marks["events"]), int(marks["generations"])
        if not changed and not other:
            total = sum(v["count"] for k, v in now.items() if not k.startswith("@"))
            return dg.SkipReason(
                f"no new traces, registry events or generations since the last metrics refresh ({total} traces,"
                f" {len(rows)} agents)"
            )
        digest = hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()[:16]
        tags = {"genepool/trigger": "trace_ingest", "genepool/new_traces": summary or "none"}
        if other:
            tags["genepool/also_changed"] = ", ".join(other)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"metrics@{digest}", tags=tags)],
            cursor=json.dumps(now, sort_keys=True),
        )

    return _sensor


trace_ingest_sensor = build_trace_ingest_sensor()


# --- run failure recorder -------------------------------------------------------------------------
def record_run_failure(db: Database, context: dg.RunFailureSensorContext) -> dict:
    """Insert the failed run into genepool.run_failures (idempotent on run_id); returns the row."""
    run = context.dagster_run
    pkey = library_key_of_tags(run.tags) or run.tags.get(PARTITION_TAG)  # the library's key when valid
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
    end = record.end_time if record is not None and record.end_time else datetime.now(UTC).timestamp()
    failed_at = datetime.fromtimestamp(end, UTC)
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
        "INSERT INTO genepool.run_failures (run_id, job_name, partition_key, agent_type, error, failed_steps,"
        " failed_at) VALUES (%(run_id)s, %(job_name)s, %(partition_key)s, %(agent_type)s, %(error)s,"
        " %(failed_steps)s, %(failed_at)s) ON CONFLICT (run_id) DO NOTHING",
        row,
    )
    return row


@dg.run_failure_sensor(
    name="run_failure_recorder",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,  # on whenever the daemon runs (README: Sensors)
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
