"""Asset checks on the generation assets."""


import dagster as dg
import pandas as pd
import psycopg

from genepool.core.trace_schema import TRACE_COLUMNS, TraceSchema
from assets.partitions import parse_partition_key
from genepool.store import generation_spend
from resources import OptimizerResource, PostgresResource


def _partition(context: dg.AssetCheckExecutionContext) -> str:
    """The generation partition this run materialised. (The checks are not partitioned, so loading the
    asset value would load every partition: they read the partition's rows from PostgreSQL instead.)"""
    key = context.run.tags.get("dagster/partition")
    if not key:
        raise dg.Failure("this check runs with a generation partition (e.g. 'support-desk/g0001'); none was given")
    parse_partition_key(key)
    return key


@dg.asset_check(asset="traces", description="The partition's traces match the pandera trace schema.")
def traces_schema(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    key = _partition(context)
    rows = postgres.database().fetchall(
        f"SELECT {', '.join(TRACE_COLUMNS)} FROM genepool.traces WHERE partition_key = %s ORDER BY id", (key,)
    )
    df = pd.DataFrame(rows, columns=list(TRACE_COLUMNS))
    try:
        TraceSchema.validate(df, lazy=True)
        return dg.AssetCheckResult(passed=len(df) > 0, metadata={"rows": len(df)})
    except Exception as exc:  # pandera SchemaErrors
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)[:2000]})


@dg.asset_check(asset="pareto_front", description="The Pareto front has at least one feasible member.")
def front_not_empty(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    key = _partition(context)
    n = postgres.database().fetchone(
        "SELECT count(*) AS n FROM genepool.front_members WHERE experiment_id = %s AND on_front AND feasible", (key,)
    )["n"]
    return dg.AssetCheckResult(passed=n > 0, metadata={"front_size": n})


@dg.asset_check(asset="promoted_prompts", description="No promoted candidate regresses on a control item.")
def promoted_no_control_regression(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> dg.AssetCheckResult:
    db = postgres.database()
    key = _partition(context)
    promoted = db.fetchall(
        "SELECT DISTINCT prompt_id FROM genepool.prompt_events"
        " WHERE label = 'candidate' AND details->>'experiment_id' = %s ORDER BY prompt_id",
        (key,),
    )
    # production of this generation = the prompt whose traces the partition collected
    prod = db.fetchone("SELECT prompt_id FROM genepool.traces WHERE partition_key = %s LIMIT 1", (key,))
    bad = []
    for p in promoted if prod else []:
        row = db.fetchone(
            "SELECT count(*) AS n FROM genepool.experiment_results b JOIN genepool.experiment_results c"
            " ON c.experiment_id = b.experiment_id AND c.item_id = b.item_id AND c.role = 'control'"
            " WHERE b.experiment_id = %s AND b.role = 'control' AND b.success AND b.prompt_id = %s"
            " AND c.prompt_id = %s AND NOT c.success",
            (key, prod["prompt_id"], p["prompt_id"]),
        )
        if row["n"]:
            bad.append(f"{p['prompt_id']}: {row['n']} control regressions")
    return dg.AssetCheckResult(
        passed=not bad, metadata={"promoted": len(promoted), "regressions": "; ".join(bad) or "none"}
    )


@dg.asset_check(asset="experiment_results", description="The generation stayed within its rollout budget.")
def budget_not_exceeded(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, optimizer: OptimizerResource
) -> dg.AssetCheckResult:
    key = _partition(context)
    used = generation_spend(postgres.database(), key).rollouts
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
