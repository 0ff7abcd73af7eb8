"""mutated_population -> experiment_results -> pareto_front: breed, test, select."""

import dagster as dg

from assets.common import GROUP, generation_for, md_table
from assets.partitions import generations_partitions
from assets.plots import agent_history_plot, pareto_plot
from genepool.steps import (
    ExperimentResults,
    FailureClusters,
    Front,
    Population,
    TraceSet,
    mutate_population,
    run_experiments,
    select_front,
)
from genepool.store import generation_spend
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
    traces: TraceSet,
    failure_clusters: FailureClusters,
) -> dg.Output[Population]:
    gen = generation_for(context, postgres, llm, optimizer, reflection_llm)
    pop = mutate_population(gen, traces, failure_clusters)
    rows = [{"pos": c.position, "prompt": c.prompt_id or "-", "operator": c.operator, "status": c.status,
             "reason": c.reason[:80]} for c in pop.children]
    return dg.Output(
        pop,
        metadata={
            "children": dg.MetadataValue.md(md_table(rows, ["pos", "prompt", "operator", "status", "reason"])),
            "accepted": dg.MetadataValue.int(len(pop.accepted)),
            "rejected": dg.MetadataValue.int(len(pop.children) - len(pop.accepted)),
        },
    )


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    description="Every candidate run on the regression set: targets (items production failed) and controls "
    "(items it passed); success, tokens and latency per item; the budget is checked before each call.",
)
def experiment_results(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    optimizer: OptimizerResource,
    langfuse: LangfuseResource,
    mutated_population: Population,
    traces: TraceSet,
) -> dg.Output[ExperimentResults]:
    gen = generation_for(context, postgres, llm, optimizer)
    res = run_experiments(gen, mutated_population, traces)
    if langfuse.enabled and len(res):  # each candidate's run as a Langfuse experiment with item scores
        for pid, rows in res.frame.groupby("prompt_id", sort=True):
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
        res,
        metadata={
            "rows": len(res),
            "candidates": dg.MetadataValue.int(res.candidates),
            "rollouts_spent": dg.MetadataValue.int(spend.rollouts),
            "llm_calls": dg.MetadataValue.int(spend.step("experiments").llm_calls),
            "skipped_for_budget": dg.MetadataValue.int(len(res.skipped_for_budget)),
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
    experiment_results: ExperimentResults,
) -> dg.Output[Front]:
    gen = generation_for(context, postgres, llm, optimizer)
    front = select_front(gen, experiment_results)
    rows = [
        {"prompt": m.prompt_id, "version": m.version, "front": m.on_front, "survivor": m.survivor,
         "screen success": f"{m.screen.success:.2f}",
         "val success": f"{m.validation.success:.2f}" if m.validation else "nan",
         "tokens": f"{m.screen.avg_tokens:.0f}", "latency ms": f"{m.screen.avg_latency_ms:.0f}",
         "ctrl regress": m.control_regressions}
        for m in front.members
    ]
    on_front = front.on_front
    return dg.Output(
        front,
        metadata={
            "front": dg.MetadataValue.md(md_table(rows, list(rows[0]) if rows else ["prompt"])),
            "front_size": dg.MetadataValue.int(len(on_front)),
            "best_success": dg.MetadataValue.float(max((m.screen.success for m in on_front), default=0.0)),
            "min_tokens": dg.MetadataValue.float(min((m.screen.avg_tokens for m in on_front), default=0.0)),
            "hypervolume": dg.MetadataValue.float(front.hypervolume),
            "budget_spent_rollouts": dg.MetadataValue.int(generation_spend(gen.db, gen.key).rollouts),
            # PNGs (matplotlib): this generation's candidates, and this agent's generations so far
            "pareto_plot": pareto_plot(front),
            "agent_history_plot": agent_history_plot(gen.db, gen.agent_type),
        },
    )
