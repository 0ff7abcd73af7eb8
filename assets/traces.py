"""traces -> failure_clusters: what the production prompt does, and how it fails."""


import dagster as dg
import pandas as pd

from assets.common import GROUP, generation_for, md_table
from assets.partitions import generations_partitions
from genepool.pipeline import collect_traces, find_failure_clusters
from genepool.core.trace_schema import store_traces
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
) -> dg.Output[pd.DataFrame]:
    gen = generation_for(context, postgres, llm, optimizer)
    ingested = 0
    if langfuse.enabled:  # production traces of the agent from Langfuse, same pandera schema
        last = gen.db.fetchone(
            "SELECT max(created_at) AS t FROM genepool.traces WHERE agent_type = %s AND source = 'langfuse'",
            (gen.agent_type,),
        )["t"]
        external = langfuse.fetch_traces(gen.agent_type, since=last, db=gen.db, partition_key=gen.key)
        ingested = store_traces(gen.db, external, gen.key)
    df = collect_traces(gen)
    success = float(df["success"].mean()) if len(df) else 0.0
    quarantined = gen.db.fetchone(
        "SELECT count(*) AS n FROM genepool.trace_quarantine WHERE partition_key = %s", (gen.key,)
    )["n"]
    return dg.Output(
        df,
        metadata={
            "rows": len(df),
            "success_rate": dg.MetadataValue.float(success),
            "avg_tokens": dg.MetadataValue.float(float((df["prompt_tokens"] + df["completion_tokens"]).mean()) if len(df) else 0.0),
            "quarantined": dg.MetadataValue.int(int(quarantined)),
            "langfuse_ingested": dg.MetadataValue.int(int(ingested)),
            "prompt_id": dg.MetadataValue.text(str(df["prompt_id"].iloc[0]) if len(df) else ""),
        },
    )


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    description="Failed traces grouped into named failure modes with their share of failures.",
)
def failure_clusters(traces: pd.DataFrame) -> dg.Output[list[dict]]:
    clusters = find_failure_clusters(traces)
    rows = [
        {"share": f"{c['share']:.0%}", "name": c["name"], "count": c["count"], "hint": c["hint"]} for c in clusters
    ]
    return dg.Output(
        clusters,
        metadata={
            "clusters": dg.MetadataValue.md(md_table(rows, ["share", "name", "count", "hint"])),
            "failures": dg.MetadataValue.int(sum(c["count"] for c in clusters)),
        },
    )
