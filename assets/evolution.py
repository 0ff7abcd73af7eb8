"""mutated_population -> experiment_results -> pareto_front: breed, test, select."""


import dagster as dg
import pandas as pd

from assets.common import GROUP, generation_for, md_table
from assets.partitions import generations_partitions
from genepool.pipeline import generation_spend, mutate_population, run_experiments, select_front
from resources import LLMResource, OptimizerResource, PostgresResource
from resources.langfuse import LangfuseResource


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    description="Children bred with DEAP operators over the prompt genome (instructions, few-shot turns, "
    "parameters, crossover, reflection); each is rendered with StrictUndefined and sanity-checked, and a "
    "rejected child is stored with the reason.",
)
def mutated_population(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    reflection_llm: LLMResource,
    optimizer: OptimizerResource,
    traces: pd.DataFrame,
    failure_clusters: list[dict],
) -> dg.Output[dict]:
    gen = generation_for(context, postgres, llm, optimizer, reflection_llm)
    pop = mutate_population(gen, traces, failure_clusters)
    rows = [
        {"pos": c["position"], "prompt": c["prompt_id"] or "-", "operator": c["operator"], "status": c["status"],
         "reason": c["reason"][:80]}
        for c in pop["children"]
    ]
    return dg.Output(
        pop,
        metadata={
            "children": dg.MetadataValue.md(md_table(rows, ["pos", "prompt", "operator", "status", "reason"])),
            "accepted": dg.MetadataValue.int(sum(c["status"] == "accepted" for c in pop["children"])),
            "rejected": dg.MetadataValue.int(sum(c["status"] == "rejected" for c in pop["children"])),
        },
    )


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    description="Every candidate run on the regression set: targets (items production failed) and controls "
    "(items it passed); success, tokens and latency per item; the rollout budget is checked before each call.",
)
def experiment_results(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    optimizer: OptimizerResource,
    langfuse: LangfuseResource,
    mutated_population: dict,
    traces: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    gen = generation_for(context, postgres, llm, optimizer)
    df = run_experiments(gen, mutated_population, traces)
    if langfuse.enabled and len(df):  # each candidate's run as a Langfuse experiment with item scores
        for pid, rows in df.groupby("prompt_id", sort=True):
            results = [
                {"item_id": r["item_id"], "input": gen.by_id[r["item_id"]].input, "output": r["output"],
                 "expected": gen.by_id[r["item_id"]].expected, "success": bool(r["success"]),
                 "prompt_tokens": int(r["prompt_tokens"]), "completion_tokens": int(r["completion_tokens"]),
                 "latency_ms": float(r["latency_ms"])}
                for r in rows.to_dict("records")
            ]
            langfuse.log_experiment(gen.key, pid, results, agent_type=gen.agent_type, model=gen.llm.model)
    spend = generation_spend(gen.db, gen.key)
    return dg.Output(
        df,
        metadata={
            "rows": len(df),
            "candidates": dg.MetadataValue.int(int(df["prompt_id"].nunique()) if len(df) else 0),
            "rollouts_spent": dg.MetadataValue.int(sum(v["rollouts"] for k, v in spend.items() if k != "test_report")),
            "llm_calls": dg.MetadataValue.int(spend.get("experiments", {}).get("llm_calls", 0)),
            "skipped_for_budget": dg.MetadataValue.int(len(df.attrs.get("skipped_for_budget", []))),
        },
    )


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    description="NSGA-II (DEAP) on [success, -tokens, -latency]; a control regression makes a candidate "
    "infeasible. The front is re-scored on validation, where per-instance (GEPA-style) survivors are kept too.",
)
def pareto_front(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    optimizer: OptimizerResource,
    experiment_results: pd.DataFrame,
) -> dg.Output[dict]:
    gen = generation_for(context, postgres, llm, optimizer)
    front = select_front(gen, experiment_results)
    rows = []
    for m in front["members"]:
        v = m["validation"] or {}
        rows.append({
            "prompt": m["prompt_id"], "version": m["version"], "front": m["on_front"], "survivor": m["survivor"],
            "screen success": f"{m['screen']['success']:.2f}", "val success": f"{v.get('success', float('nan')):.2f}",
            "tokens": f"{m['screen']['avg_tokens']:.0f}", "latency ms": f"{m['screen']['avg_latency_ms']:.0f}",
            "ctrl regress": m["control_regressions"],
        })
    on_front = [m for m in front["members"] if m["on_front"]]
    best = max((m["screen"]["success"] for m in on_front), default=0.0)
    spend = generation_spend(gen.db, gen.key)
    return dg.Output(
        front,
        metadata={
            "front": dg.MetadataValue.md(md_table(rows, list(rows[0]) if rows else ["prompt"])),
            "front_size": dg.MetadataValue.int(len(on_front)),
            "best_success": dg.MetadataValue.float(best),
            "min_tokens": dg.MetadataValue.float(min((m["screen"]["avg_tokens"] for m in on_front), default=0.0)),
            "hypervolume": dg.MetadataValue.float(front["hypervolume"]),
            "budget_spent_rollouts": dg.MetadataValue.int(sum(v["rollouts"] for k, v in spend.items() if k != "test_report")),
        },
    )
