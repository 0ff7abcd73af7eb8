"""Asset checks on the generation assets."""


import dagster as dg
import pandas as pd
import psycopg

from genepool.core.trace_schema import TraceSchema
from genepool.orchestration.partitions import parse_partition_key
from genepool.pipeline import generation_spend
from genepool.resources.dagster_resources import OptimizerResource, PostgresResource


@dg.asset_check(asset="traces", description="Traces match the pandera trace schema.")
def traces_schema(traces: pd.DataFrame) -> dg.AssetCheckResult:
    try:
        TraceSchema.validate(traces, lazy=True)
        return dg.AssetCheckResult(passed=True, metadata={"rows": len(traces)})
    except Exception as exc:  # pandera SchemaErrors
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)[:2000]})


@dg.asset_check(asset="pareto_front", description="The Pareto front has at least one feasible member.")
def front_not_empty(pareto_front: dict) -> dg.AssetCheckResult:
    n = sum(1 for m in pareto_front["members"] if m["on_front"])
    return dg.AssetCheckResult(passed=n > 0, metadata={"front_size": n})


@dg.asset_check(asset="promoted_prompts", description="No promoted candidate regresses on a control item.")
def promoted_no_control_regression(
    postgres: PostgresResource, promoted_prompts: dict
) -> dg.AssetCheckResult:
    db = postgres.database()
    key = promoted_prompts["partition_key"]
    prod = promoted_prompts["production_id"]
    bad = []
    for p in promoted_prompts["promoted"]:
        row = db.fetchone(
            "SELECT count(*) AS n FROM genepool.experiment_results b JOIN genepool.experiment_results c"
            " ON c.experiment_id = b.experiment_id AND c.item_id = b.item_id AND c.role = 'control'"
            " WHERE b.experiment_id = %s AND b.prompt_id = %s AND b.role = 'control' AND b.success"
            " AND c.prompt_id = %s AND NOT c.success",
            (key, prod, p["prompt_id"]),
        )
        if row["n"]:
            bad.append(f"{p['prompt_id']}: {row['n']} control regressions")
    return dg.AssetCheckResult(passed=not bad, metadata={"regressions": "; ".join(bad) or "none"})


@dg.asset_check(asset="experiment_results", description="The generation stayed within its rollout budget.")
def budget_not_exceeded(
    postgres: PostgresResource, optimizer: OptimizerResource, experiment_results: pd.DataFrame
) -> dg.AssetCheckResult:
    if not len(experiment_results):
        return dg.AssetCheckResult(passed=True, metadata={"rollouts": 0})
    key = experiment_results["experiment_id"].iloc[0]
    parse_partition_key(key)
    spend = generation_spend(postgres.database(), key)
    used = sum(v["rollouts"] for k, v in spend.items() if k != "test_report")
    limit = optimizer.max_rollouts
    return dg.AssetCheckResult(passed=used <= limit, metadata={"rollouts": used, "max_rollouts": limit})


@dg.asset_check(asset="prompt_registry", description="PostgreSQL refuses UPDATE of a prompt row (immutability).")
def registry_immutable(postgres: PostgresResource) -> dg.AssetCheckResult:
    db = postgres.database()
    try:
        with db.connection() as conn:
            conn.execute("SAVEPOINT immut")
            conn.execute("UPDATE genepool.prompts SET content = content")
            conn.execute("ROLLBACK TO SAVEPOINT immut")
        return dg.AssetCheckResult(passed=False, metadata={"error": "an UPDATE of genepool.prompts was allowed"})
    except psycopg.errors.InsufficientPrivilege as exc:
        return dg.AssetCheckResult(passed=True, metadata={"refused_with": str(exc).splitlines()[0]})


GENERATION_CHECKS = [traces_schema, front_not_empty, promoted_no_control_regression, budget_not_exceeded]
REGISTRY_CHECKS = [registry_immutable]
