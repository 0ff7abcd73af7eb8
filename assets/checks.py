"""Asset checks on the generation assets."""


import warnings

import dagster as dg
import pandas as pd
import psycopg

from assets.partitions import PARTITION_TAG, InvalidPartition, generations_partitions, library_key
from genepool.core.trace_schema import TRACE_COLUMNS, TraceSchema
from genepool.store import generation_spend
from resources import OptimizerResource, PostgresResource

# Partitioned asset checks are a documented Dagster 1.13 feature marked "preview"; say so once, here.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec is currently in preview")


def _partition(context: dg.AssetCheckExecutionContext) -> str:
    """The generation partition being checked. The generation checks are partitioned like their assets, so
    the UI can execute one for a chosen partition and its history shows the partition; they read the
    partition's rows from PostgreSQL."""
    key = context.partition_key if context.has_partition_key else context.run.tags.get(PARTITION_TAG)
    if not key:
        raise dg.Failure("this check runs with a generation partition (agent × generation, e.g. 'support-desk|g0001');"
                         " none was given")
    try:
        return library_key(key)  # the library's key of the rows, e.g. 'support-desk/g0001'
    except InvalidPartition as exc:
        raise dg.Failure(str(exc)) from None


@dg.asset_check(
    asset="traces", partitions_def=generations_partitions,
    description="The partition's traces match the pandera trace schema."
)
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


@dg.asset_check(
    asset="pareto_front", partitions_def=generations_partitions,
    description="The Pareto front has at least one feasible member."
)
def front_not_empty(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    key = _partition(context)
    n = postgres.database().fetchone(
        "SELECT count(*) AS n FROM genepool.front_members WHERE experiment_id = %s AND on_front AND feasible", (key,)
    )["n"]
    return dg.AssetCheckResult(passed=n > 0, metadata={"front_size": n})


@dg.asset_check(
    asset="promoted_prompts", partitions_def=generations_partitions,
    description="No promoted candidate regresses on a control item."
)
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


@dg.asset_check(
    asset="experiment_results", partitions_def=generations_partitions,
    description="The generation stayed within its rollout budget."
)
def budget_not_exceeded(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, optimizer: OptimizerResource
) -> dg.AssetCheckResult:
    key = _partition(context)
    used = generation_spend(postgres.database(), key).rollouts
    limit = optimizer.max_rollouts
    return dg.AssetCheckResult(passed=used <= limit, metadata={"rollouts": used, "max_rollouts": limit})


def registry_attacks(conn: psycopg.Connection) -> dict[str, str]:
    """Try every statement the app must not be able to run on the registry, each in its own savepoint of the
    caller's transaction (which the caller rolls back). Returns statement -> "refused: ..." or "ALLOWED"."""
    from genepool.core.genome import Genome
    from genepool.registry import prompt_id_for

    agent = "__registry_check__"  # a throw-away agent, so no real agent's lock or state is involved
    g1, g2 = Genome(role="registry check A"), Genome(role="registry check B")
    a, b = prompt_id_for(agent, g1), prompt_id_for(agent, g2)
    insert = (
        "INSERT INTO genepool.prompts (id, agent_type, version, content, genome, genome_canonical, parent_ids)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )
    event = "INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor) VALUES (%s, %s, %s, 'check')"
    setup = [
        (insert, (a, agent, "0.0.1", g1.content(), g1.canonical_json(), g1.canonical_json(), [])),
        (event, (a, agent, "draft")),
        (event, (a, agent, "production")),
        (insert, (b, agent, "0.0.2", g2.content(), g2.canonical_json(), g2.canonical_json(), [])),
        (event, (b, agent, "draft")),
    ]
    g3 = Genome(role="registry check C")
    c = prompt_id_for(agent, g3)
    reject_b = (event, (b, agent, "rejected"))  # legitimate, run before the last attack
    attacks = [
        ("UPDATE genepool.prompts", "UPDATE genepool.prompts SET content = content", None, None),
        ("DELETE FROM genepool.prompt_events", "DELETE FROM genepool.prompt_events", None, None),
        ("TRUNCATE genepool.prompts", "TRUNCATE genepool.prompts CASCADE", None, None),
        ("TRUNCATE genepool.prompt_events", "TRUNCATE genepool.prompt_events", None, None),
        ("ALTER TABLE genepool.prompts DISABLE TRIGGER", "ALTER TABLE genepool.prompts DISABLE TRIGGER ALL", None,
         None),
        ("DROP TRIGGER prompt_events_checked", "DROP TRIGGER prompt_events_checked ON genepool.prompt_events", None,
         None),
        ("forged INSERT (id is not the genome's hash)", insert,
         ("pr_0000000000000000", agent, "0.0.3", "forged", g2.canonical_json(), g2.canonical_json(), []), None),
        ("forged INSERT (missing parent)", insert,
         (c, agent, "0.0.4", g3.content(), g3.canonical_json(), g3.canonical_json(), ["pr_ffffffffffffffff"]), None),
        ("forged production event (second production prompt)", event, (b, agent, "production"), None),
        ("forged production event (rejected -> production)", event, (b, agent, "production"), reject_b),
    ]
    out: dict[str, str] = {}
    for sql_text, params in setup:  # legitimate rows (they must be accepted, or the attacks prove nothing)
        conn.execute(sql_text, params)
    for name, sql_text, params, before in attacks:
        if before is not None:
            conn.execute(*before)
        conn.execute("SAVEPOINT registry_attack")
        try:
            conn.execute(sql_text, params)
            out[name] = "ALLOWED"
        except psycopg.Error as exc:
            out[name] = "refused: " + (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        conn.execute("ROLLBACK TO SAVEPOINT registry_attack")
    return out


@dg.asset_check(
    asset="prompt_registry",
    description="PostgreSQL refuses every forbidden statement on the registry as the app's role: UPDATE, DELETE, "
    "TRUNCATE, ALTER TABLE ... DISABLE TRIGGER, DROP TRIGGER, a forged prompt and forged production events "
    "(all tried in one transaction that is rolled back).",
)
def registry_immutable(postgres: PostgresResource) -> dg.AssetCheckResult:
    db = postgres.database()
    with db.connection() as conn, conn.transaction(force_rollback=True):
        outcomes = registry_attacks(conn)
    allowed = [k for k, v in outcomes.items() if v == "ALLOWED"]
    return dg.AssetCheckResult(
        passed=not allowed,
        metadata={
            "allowed": ", ".join(allowed) or "none",
            "outcomes": dg.MetadataValue.json(outcomes),
            **({"fix": "the app connects as the owner of the registry tables; give it the genepool_app role "
                       "(README 'External PostgreSQL')"} if allowed else {}),
        },
    )


GENERATION_CHECKS = [traces_schema, front_not_empty, promoted_no_control_regression, budget_not_exceeded]
REGISTRY_CHECKS = [registry_immutable]
