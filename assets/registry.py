"""Unpartitioned assets: the prompt registry (gene pool) and the agents' benchmarks."""


import dagster as dg

from genepool.agents import all_agents, load_agent_benchmark
from genepool.steps import ensure_production
from genepool.store import ensure_agent
from resources import PostgresResource


def _cell(v: object, limit: int = 80) -> str:
    text = "-" if v is None or v == "" else str(v)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(rows: list[dict], columns: list[str], limit: int = 80) -> str:
    if not rows:
        return "_(none)_"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(_cell(r.get(c), limit) for c in columns) + " |" for r in rows)


LINEAGE_ROWS = 60


def registry_metadata(db) -> dict:
    """What the registry's page shows: counts, each agent's production prompt (who approved it and why), the
    candidates waiting for a person, and a lineage table (parents, experiment, operator, decision)."""
    counts = db.fetchall(
        "SELECT agent_type, state, count(*) AS n FROM genepool.prompt_state GROUP BY 1, 2 ORDER BY 1, 2"
    )
    production = db.fetchall(
        "SELECT s.agent_type AS agent, s.prompt_id AS prompt, s.version, s.state_since AS since, s.actor AS by,"
        " s.reason, p.content FROM genepool.prompt_state s JOIN genepool.prompts p ON p.id = s.prompt_id"
        " WHERE s.state = 'production' ORDER BY s.agent_type"
    )
    candidates = db.fetchall(
        "SELECT s.agent_type AS agent, s.prompt_id AS prompt, s.version, p.experiment_id AS experiment,"
        " s.operator, s.state_since AS proposed, s.reason FROM genepool.prompt_state s"
        " JOIN genepool.prompts p ON p.id = s.prompt_id WHERE s.state = 'candidate' ORDER BY s.agent_type, s.version"
    )
    lineage = db.fetchall(
        "SELECT s.agent_type AS agent, s.prompt_id AS prompt, s.version, s.state, array_to_string(p.parent_ids, ', ')"
        " AS parents, p.experiment_id AS experiment, s.operator, s.actor AS decided_by, s.reason,"
        " s.state_since AS at FROM genepool.prompt_state s JOIN genepool.prompts p ON p.id = s.prompt_id"
        " WHERE s.state IS DISTINCT FROM 'draft' ORDER BY s.state_since DESC NULLS LAST, s.prompt_id LIMIT %s",
        (LINEAGE_ROWS,),
    )
    for r in production:
        r["since"] = r["since"].strftime("%Y-%m-%d %H:%M") if r["since"] else None
    for rows, col in ((candidates, "proposed"), (lineage, "at")):
        for r in rows:
            r[col] = r[col].strftime("%Y-%m-%d %H:%M") if r[col] else None
    return {
        "prompts": dg.MetadataValue.int(sum(r["n"] for r in counts)),
        "by_state": dg.MetadataValue.md(
            "\n".join(f"- {r['agent_type']}: {r['state']} = {r['n']}" for r in counts) or "_(empty)_"
        ),
        "production": dg.MetadataValue.md(
            _table(production, ["agent", "prompt", "version", "since", "by", "reason", "content"], limit=160)
        ),
        "candidates": dg.MetadataValue.md(
            _table(candidates, ["agent", "prompt", "version", "experiment", "operator", "proposed", "reason"])
        ),
        "lineage": dg.MetadataValue.md(
            _table(lineage, ["agent", "prompt", "version", "state", "parents", "experiment", "operator", "decided_by",
                             "reason", "at"])
        ),
        "candidates_waiting": dg.MetadataValue.int(len(candidates)),
    }


@dg.asset(
    group_name="registry",
    description="The gene pool: every agent type has a production prompt (its seed at first). Its page shows each "
    "agent's production prompt, the candidates waiting for a person and the lineage (parents, experiment, approver, "
    "reason); approvals and rejections (approval_job, `genepool approve/reject`) record a new materialisation.",
)
def prompt_registry(postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    registry = postgres.registry()
    for agent in all_agents().values():
        ensure_agent(db, agent)
        ensure_production(registry, agent)
    return dg.MaterializeResult(metadata=registry_metadata(db))


@dg.asset(
    group_name="registry",
    description="Benchmarks of every agent type (JSONL: id, input, expected, checker, split, task), validated.",
)
def benchmark() -> dg.MaterializeResult:
    meta: dict = {}
    for agent_type in sorted(all_agents()):
        items = load_agent_benchmark(agent_type)
        for split in ("train", "validation", "test"):
            meta[f"{agent_type}/{split}"] = dg.MetadataValue.int(sum(i.split == split for i in items))
    return dg.MaterializeResult(metadata=meta)
