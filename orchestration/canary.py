"""The canary: the production prompt's health measured by genepool itself, so an agent is watched again
after an approval even without Langfuse.

A new production prompt has no traces, so ``agent_health`` shows 0 runs (< ``min_runs``) and the threshold
sensor would never fire for that agent again until real traffic arrives. ``production_canary`` (group
"monitoring") runs each opted-in agent's *current production prompt* on a fixed, seeded sample of the
agent's **train** items (never validation or test) and stores the answers as production traces with source
``canary`` through the same validated insert path as every other production trace (``store_traces``, the
pandera schema), with the prompt id and version. The dbt metrics refresh (trace_ingest_sensor) then counts
them in ``agent_health`` and the sensor sees the new prompt's success rate.

Budget and idempotence: ``canary_items`` per agent (``GENEPOOL_THRESHOLDS``, default 20, 0 = off); opt-in
with the thresholds (agents not named there get no canary). A canary trace's id is a hash of (prompt, item),
so each production prompt is measured once per item: a re-run inserts nothing, calls no model for items
already measured (and the LLM cache answers any repeated request), and nothing is counted twice.

``canary_job`` materialises it; ``canary_sensor`` (on by default) requests it when an opted-in agent's
production prompt changed (an approval: ``approval_job``, ``genepool approve``, the web page) and
``canary_schedule`` (daily) catches anything missed (an agent newly opted in, a larger ``canary_items``).

It lives in orchestration/ (not assets/) because it reads the sensor's per-agent settings
(``orchestration.sensors.parse_thresholds``), and assets/ never imports orchestration/.
"""

# no `from __future__ import annotations`: Dagster reads the context annotation at runtime
import hashlib
import json
import os
import random

import dagster as dg
import pandas as pd

from genepool.core.benchmark import split_items
from genepool.core.trace_schema import quarantine, store_traces, validate_traces
from genepool.runner import BenchmarkRunner
from orchestration.sensors import THRESHOLDS_ENV, parse_thresholds
from resources import LLMResource, PostgresResource

MONITORING = "monitoring"
CANARY_SOURCE = "canary"
CANARY_PURPOSE = "canary"


def canary_trace_id(prompt_id: str, item_id: str) -> str:
    """One id per (production prompt, item): the same prompt on the same item is stored once."""
    return "tr_" + hashlib.sha256(f"canary|{prompt_id}|{item_id}".encode()).hexdigest()[:20]


def canary_sample(agent_type: str, n: int) -> list:
    """The agent's fixed canary items: ``n`` train items spread over tasks, seeded by the agent type only (the
    same items for every production prompt, so versions are compared on the same items)."""
    from genepool.agents import load_agent_benchmark
    from genepool.steps.traces import stratified

    if n <= 0:
        return []
    train = split_items(load_agent_benchmark(agent_type), "train")
    rng = random.Random(f"genepool-canary|{agent_type}")
    return stratified(train, n, rng)[:n]


def canary_agents() -> dict[str, int]:
    """Opted-in agents (GENEPOOL_THRESHOLDS) and their canary_items (0 = off)."""
    table = parse_thresholds(os.environ.get(THRESHOLDS_ENV))
    return {agent: th.canary_items for agent, th in sorted(table.items())}


def run_canary(db, llm_client, agent_type: str, n_items: int) -> dict:
    """Run the agent's production prompt on its canary items not yet measured for that prompt; store the
    traces. Returns what was done (for the asset's metadata and the tests)."""
    from genepool.registry import PromptRegistry

    prod = PromptRegistry(db).get_prompt(agent_type)
    sample = canary_sample(agent_type, n_items)
    ids = {it.id: canary_trace_id(prod.id, it.id) for it in sample}
    have = {r["id"] for r in db.fetchall("SELECT id FROM genepool.traces WHERE id = ANY(%s)", (list(ids.values()),))}
    todo = [it for it in sample if ids[it.id] not in have]
    results = BenchmarkRunner(llm_client, None, partition_key=None, variables={"agent_type": agent_type}) \
        .run_candidate(prod.genome, todo, purpose=CANARY_PURPOSE) if todo else []
    rows = [{
        "id": ids[r.item_id], "agent_type": agent_type, "prompt_id": prod.id, "prompt_version": prod.version,
        "partition_key": None, "source": CANARY_SOURCE, "item_id": r.item_id, "input": r.input, "output": r.output,
        "expected": r.expected, "success": r.success, "checker_message": r.checker_message,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "cost_usd": r.cost_usd,
        "latency_ms": r.latency_ms, "tool_calls": [], "error": None,
        "metadata": {"task": r.task, "signature": r.signature, "split": r.split, "canary": True},
    } for r in results]
    new = bad = 0
    if rows:
        valid, rejected = validate_traces(pd.DataFrame(rows))
        new = store_traces(db, valid, None)
        if rejected:
            bad = quarantine(db, rejected, CANARY_SOURCE, None)
    return {"agent": agent_type, "prompt_id": prod.id, "version": prod.version, "items": len(sample),
            "already": len(have), "ran": len(todo), "new": new, "quarantined": bad,
            "solved": sum(1 for r in results if r.success)}


@dg.asset(
    group_name=MONITORING,
    deps=["prompt_registry"],
    description="Canary production traces: each opted-in agent's current production prompt on a fixed, seeded "
    "sample of its train items (canary_items, default 20), stored as production traces with source 'canary', "
    "once per prompt and item, so the threshold sensor watches an agent again after an approval.",
)
def production_canary(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      llm: LLMResource) -> dg.MaterializeResult:
    db = postgres.database()
    agents = canary_agents()
    prod = {r["agent_type"] for r in db.fetchall(
        "SELECT DISTINCT agent_type FROM genepool.prompt_state WHERE state = 'production'")}
    done, lines = [], []
    client = None
    for agent, n in agents.items():
        if n <= 0:
            lines.append(f"| {agent} | - | off (canary_items 0) | | |")
            continue
        if agent not in prod:
            lines.append(f"| {agent} | - | no production prompt | | |")
            continue
        client = client or llm.client(db)
        rec = run_canary(db, client, agent, n)
        done.append(rec)
        lines.append(f"| {agent} | {rec['prompt_id']} v{rec['version']} | {rec['items']} items, {rec['ran']} run,"
                     f" {rec['already']} already measured | {rec['new']} | {rec['solved']}/{rec['ran']} |")
        context.log.info(f"{agent}: canary of {rec['prompt_id']} v{rec['version']}: {rec['ran']} items run, "
                         f"{rec['new']} new traces, {rec['already']} already measured")
    table = ("| agent | production prompt | canary | new traces | solved |\n|---|---|---|---|---|\n" + "\n".join(lines)
             if lines else "_(no agent opted in: GENEPOOL_THRESHOLDS names none)_")
    return dg.MaterializeResult(metadata={
        "new_traces": dg.MetadataValue.int(sum(r["new"] for r in done)),
        "rollouts": dg.MetadataValue.int(sum(r["ran"] for r in done)),
        "per_agent": dg.MetadataValue.md(table),
    })


canary_job = dg.define_asset_job(
    "canary_job", selection=[production_canary],
    description="Canary traces of each opted-in agent's production prompt (after an approval, and daily).",
)

canary_schedule = dg.ScheduleDefinition(
    name="canary_schedule", job=canary_job, cron_schedule="0 6 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily canary: measures any production prompt of an opted-in agent not yet measured (e.g. an "
    "agent newly opted in); costs nothing when every prompt was already measured.",
)


@dg.sensor(
    name="canary_sensor",
    job=canary_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the canary when an opted-in agent's production prompt changes (an approval).",
)
def canary_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    agents = {a for a, n in canary_agents().items() if n > 0}
    if not agents:
        return dg.SkipReason("no agent has a canary: name agents in GENEPOOL_THRESHOLDS (canary_items > 0)")
    db = postgres.database()
    prod = {r["agent_type"]: r["prompt_id"] for r in db.fetchall(
        "SELECT agent_type, prompt_id FROM genepool.prompt_state WHERE state = 'production' ORDER BY 1")
        if r["agent_type"] in agents}
    seen = json.loads(context.cursor) if context.cursor else {}
    changed = sorted(a for a, p in prod.items() if seen.get(a) != p)
    if not changed:
        return dg.SkipReason(f"no production prompt of {', '.join(sorted(agents))} changed since the last canary")
    why = "new production prompt: " + ", ".join(f"{a} {prod[a]}" for a in changed)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key="canary@" + hashlib.sha256(json.dumps(prod, sort_keys=True).encode())
                                    .hexdigest()[:16],
                                    tags={"genepool/trigger": "canary", "genepool/reason": why})],
        cursor=json.dumps(prod, sort_keys=True),
    )


def canary_defs() -> dg.Definitions:
    return dg.Definitions(assets=[production_canary], jobs=[canary_job], sensors=[canary_sensor],
                          schedules=[canary_schedule])
