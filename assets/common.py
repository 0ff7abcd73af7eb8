"""What every generation asset does first: build the plain ``Generation`` for its partition."""

from __future__ import annotations

import dagster as dg

from assets.partitions import RERUN_TAG, InvalidPartition, closed_reason, library_key, parse_partition_key
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
    """The partition's ``Generation`` (writes nothing; the traces asset registers it). A key that is not a
    known agent × ``gNNNN`` fails the step at once with one line."""
    try:
        agent_type, number = parse_partition_key(library_key(context.partition_key))
    except InvalidPartition as exc:
        raise dg.Failure(description=str(exc)) from None
    db = postgres.database()
    config = optimizer.config()
    reflect = reflection_llm.client(db) if (reflection_llm is not None and config.n_reflect > 0) else None
    return Generation(db, llm.client(db), agent_type, number, config, reflection_llm=reflect)


def refuse_closed(context: dg.AssetExecutionContext, gen: Generation) -> None:
    """The first step's guard: a closed generation (its promotion ran, or a later one of the agent exists) is
    never re-run by accident (e.g. a backfill over the grid); the run tag ``genepool/rerun=true`` allows it.
    An unfinished generation resumes as before (the fingerprint check of ``Generation.register`` still holds)."""
    why = closed_reason(gen.db, gen.key)
    if why is None:
        return
    if context.run.tags.get(RERUN_TAG, "").strip().lower() == "true":
        context.log.warning(f"re-running closed generation {gen.key} ({why}): run tag {RERUN_TAG}=true")
        return
    raise dg.Failure(
        description=f"generation {gen.key} is closed: {why}; it is not re-run by accident (e.g. by a backfill). "
        f"To re-run it on purpose, launch the run with tag {RERUN_TAG}=true (CLI: genepool run --rerun)"
    )


def md_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "_(none)_"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows)
