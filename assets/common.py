"""What every generation asset does first: build the plain ``Generation`` for its partition."""

from __future__ import annotations

import dagster as dg

from assets.partitions import parse_partition_key
from genepool.pipeline import Generation
from resources import LLMResource, OptimizerResource, PostgresResource

GROUP = "generation"


def generation_for(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    optimizer: OptimizerResource,
    reflection_llm: LLMResource | None = None,
) -> Generation:
    agent_type, number = parse_partition_key(context.partition_key)
    db = postgres.database()
    reflect = reflection_llm.client(db) if (reflection_llm is not None and optimizer.use_reflection_model) else None
    return Generation(db, llm.client(db), agent_type, number, optimizer.config(), reflection_llm=reflect)


def md_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "_(none)_"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows)
