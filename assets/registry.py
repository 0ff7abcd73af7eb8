"""Unpartitioned assets: the prompt registry (gene pool) and the agents' benchmarks."""


import dagster as dg

from genepool.agents import all_agents, load_agent_benchmark
from genepool.steps import ensure_production
from genepool.store import ensure_agent
from resources import PostgresResource


@dg.asset(group_name="registry", description="The gene pool: every agent type has a production prompt (its seed at first).")
def prompt_registry(postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    registry = postgres.registry()
    for agent in all_agents().values():
        ensure_agent(db, agent)
        ensure_production(registry, agent)
    counts = db.fetchall(
        "SELECT agent_type, state, count(*) AS n FROM genepool.prompt_state GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return dg.MaterializeResult(
        metadata={
            "prompts": dg.MetadataValue.int(sum(r["n"] for r in counts)),
            "by_state": dg.MetadataValue.md(
                "\n".join(f"- {r['agent_type']}: {r['state']} = {r['n']}" for r in counts) or "_(empty)_"
            ),
        }
    )


@dg.asset(group_name="registry", description="Benchmarks of every agent type (JSONL: id, input, expected, checker, split, task), validated.")
def benchmark() -> dg.MaterializeResult:
    meta: dict = {}
    for agent_type in sorted(all_agents()):
        items = load_agent_benchmark(agent_type)
        for split in ("train", "validation", "test"):
            meta[f"{agent_type}/{split}"] = dg.MetadataValue.int(sum(i.split == split for i in items))
    return dg.MaterializeResult(metadata=meta)
