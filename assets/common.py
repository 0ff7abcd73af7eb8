"""What every generation asset does first: build the plain ``Generation`` for its partition."""

from __future__ import annotations

import dagster as dg

from assets.partitions import parse_partition_key
from genepool.steps import Generation
from resources import LLMResource, OptimizerResource, PostgresResource

GROUP = "generation"


def generation_for(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    optimizer: OptimizerResource,
    reflection_llm: LLMResource | None = None,
) -> Generation:
    """The partition's ``Generation`` (writes nothing; the traces asset registers it)."""
    agent_type, number = parse_partition_key(context.partition_key)
    db = postgres.database()
    config = optimizer.config()
    reflect = reflection_llm.client(db) if (reflection_llm is not None and config.n_reflect > 0) else None
    return Generation(db, llm.client(db), agent_type, number, config, reflection_llm=reflect)


def md_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "_(none)_"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows)
