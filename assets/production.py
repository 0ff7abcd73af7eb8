"""Production traces, collected outside any generation, so the threshold sensor keeps watching an agent
after an approval (the new production prompt starts with no traces).

- ``production_traces`` (group "monitoring"): ingests every agent's observations from Langfuse since
  ``ingest_since`` (the latest stored observation start time minus a look-back window; deduplicated by
  observation id), stored without a partition key, i.e. as production traces. Without Langfuse keys it
  records that nothing was ingested and why.
- ``production_traces_job`` materialises it; ``production_traces_sensor`` (on by default, a no-op without
  Langfuse) requests it when an agent's production prompt changed (an approval) and every
  GENEPOOL_INGEST_MINUTES (default 15) otherwise. The metrics refresh (trace_ingest_sensor) follows.
"""

# no `from __future__ import annotations`: Dagster reads the context annotation at runtime
import json
import os
import time

import dagster as dg

from genepool.core.trace_schema import store_traces
from genepool.langfuse_io import ingest_since, lookback_from_env
from resources import PostgresResource
from resources.langfuse import LangfuseResource

MONITORING = "monitoring"
INGEST_ENV = "GENEPOOL_INGEST_MINUTES"


@dg.asset(
    group_name=MONITORING,
    deps=["prompt_registry"],
    description="Production traces of every agent from Langfuse (by the observations' own start time with a "
    "look-back window, deduplicated by observation id); what agent_health and the threshold sensor read.",
)
def production_traces(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      langfuse: LangfuseResource) -> dg.MaterializeResult:
    db = postgres.database()
    agents = [r["agent_type"] for r in db.fetchall(
        "SELECT DISTINCT agent_type FROM genepool.prompt_state WHERE state = 'production' ORDER BY 1")]
    if not langfuse.enabled:
        return dg.MaterializeResult(metadata={
            "ingested": dg.MetadataValue.int(0),
            "status": dg.MetadataValue.text(
                "Langfuse is not configured (LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY): production traces come "
                "from Langfuse or an OTel import; nothing was ingested"),
        })
    lookback = lookback_from_env()
    rows, total = [], 0
    for agent in agents:
        since = ingest_since(db, agent, lookback)
        frame = langfuse.fetch_traces(agent, since=since, db=db, partition_key=None)
        n = store_traces(db, frame, None)
        total += n
        rows.append(f"| {agent} | {since.isoformat() if since else 'all'} | {len(frame)} | {n} |")
        context.log.info(f"{agent}: {len(frame)} observations since {since or 'the beginning'}, {n} new")
    table = "| agent | since | fetched | new |\n|---|---|---|---|\n" + "\n".join(rows) if rows else "_(no agents)_"
    return dg.MaterializeResult(metadata={"ingested": dg.MetadataValue.int(total),
                                          "per_agent": dg.MetadataValue.md(table),
                                          "lookback_minutes": dg.MetadataValue.float(lookback.total_seconds() / 60)})


production_traces_job = dg.define_asset_job(
    "production_traces_job", selection=[production_traces],
    description="Ingest production traces from Langfuse (after an approval, and every GENEPOOL_INGEST_MINUTES).",
)


def _ingest_minutes() -> float:
    raw = os.environ.get(INGEST_ENV, "15")
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not 1 <= minutes <= 10080:
        raise ValueError(f"{INGEST_ENV}={raw!r} must be a number of minutes between 1 and 10080")
    return minutes


@dg.sensor(
    name="production_traces_sensor",
    job=production_traces_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ingests production traces from Langfuse when an agent's production prompt changes (an approval) "
    "and every GENEPOOL_INGEST_MINUTES; skips (saying so) when Langfuse is not configured.",
)
def production_traces_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource,
                             langfuse: LangfuseResource):
    if not langfuse.enabled:
        return dg.SkipReason("Langfuse is not configured (LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY): no production "
                             "traces to ingest; import OTel traces or set the keys")
    db = postgres.database()
    prod = {r["agent_type"]: r["prompt_id"] for r in db.fetchall(
        "SELECT agent_type, prompt_id FROM genepool.prompt_state WHERE state = 'production' ORDER BY 1")}
    cursor = json.loads(context.cursor) if context.cursor else {}
    changed = sorted(a for a, p in prod.items() if cursor.get("production", {}).get(a) != p)
    due = time.time() - float(cursor.get("last", 0)) >= _ingest_minutes() * 60
    if not changed and not due:
        return dg.SkipReason(f"no production prompt changed; next ingest within {_ingest_minutes():g} min")
    now = time.time()
    why = f"new production prompt: {', '.join(changed)}" if changed else "periodic ingest"
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"production-traces@{now:.0f}",
                                    tags={"genepool/trigger": "production_traces", "genepool/reason": why})],
        cursor=json.dumps({"production": prod, "last": now}, sort_keys=True),
    )


def production_defs() -> dg.Definitions:
    return dg.Definitions(assets=[production_traces], jobs=[production_traces_job], sensors=[production_traces_sensor])
