"""traces -> failure_clusters: what the production prompt does, and how it fails."""

import dagster as dg

from assets.common import GROUP, generation_for, md_table, refuse_closed
from assets.partitions import generations_partitions
from genepool import store
from genepool.core.trace_schema import store_traces
from genepool.langfuse_io import ingest_since, lookback_from_env
from genepool.steps import FailureClusters, TraceSet, collect_traces, find_failure_clusters
from resources import LLMResource, OptimizerResource, PostgresResource
from resources.langfuse import LangfuseResource


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    deps=["prompt_registry", "benchmark"],
    description="Execution traces of the agent's production prompt on a sample of its train split, "
    "validated with pandera; bad rows go to genepool.trace_quarantine with their reason.",
)
def traces(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    optimizer: OptimizerResource,
    langfuse: LangfuseResource,
) -> dg.Output[TraceSet]:
    gen = generation_for(context, postgres, llm, optimizer)
    refuse_closed(context, gen)
    ingested = 0
    if langfuse.enabled:  # production traces of the agent from Langfuse, same pandera schema
        # by the observations' own start time minus a look-back window (late data is not lost; ids dedupe)
        since = ingest_since(gen.db, gen.agent_type, lookback_from_env())
        external = langfuse.fetch_traces(gen.agent_type, since=since, db=gen.db, partition_key=gen.key)
        ingested = store_traces(gen.db, external, gen.key)
    ts = collect_traces(gen)
    return dg.Output(
        ts,
        metadata={
            "rows": len(ts),
            "success_rate": dg.MetadataValue.float(ts.success_rate),
            "avg_tokens": dg.MetadataValue.float(ts.avg_tokens),
            "quarantined": dg.MetadataValue.int(store.quarantined_count(gen.db, gen.key)),
            "langfuse_ingested": dg.MetadataValue.int(int(ingested)),
            "prompt_id": dg.MetadataValue.text(ts.production_id),
        },
    )


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    description="Failed traces grouped into named failure modes with their share of failures.",
)
def failure_clusters(traces: TraceSet) -> dg.Output[FailureClusters]:
    clusters = find_failure_clusters(traces)
    rows = [{"share": f"{c.share:.0%}", "name": c.name, "count": c.count, "hint": c.hint} for c in clusters.clusters]
    return dg.Output(
        clusters,
        metadata={
            "clusters": dg.MetadataValue.md(md_table(rows, ["share", "name", "count", "hint"])),
            "failures": dg.MetadataValue.int(clusters.failures),
        },
    )
