"""promoted_prompts: front members that beat production become `candidate`; a person approves one."""

import dagster as dg

from assets.common import GROUP, generation_for, md_table
from assets.partitions import generations_partitions
from genepool.steps import Front, Promotion, promote
from resources import LLMResource, OptimizerResource, PostgresResource


@dg.asset(
    partitions_def=generations_partitions,
    group_name=GROUP,
    description="Front members that beat production on validation with no control regression, labelled "
    "`candidate` in the registry; approve one with `genepool approve`, the approval page or approval_job. "
    "The held-out test split is only reported here, never used for selection.",
)
def promoted_prompts(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    llm: LLMResource,
    optimizer: OptimizerResource,
    pareto_front: Front,
) -> dg.Output[Promotion]:
    gen = generation_for(context, postgres, llm, optimizer)
    out = promote(gen, pareto_front)
    rows = []
    for p in out.promoted:
        rec = gen.registry.get(p.prompt_id)
        v = p.validation
        rows.append({"prompt": p.prompt_id, "version": p.version, "parents": ", ".join(rec.parent_ids),
                     "experiment": rec.experiment_id, "val success": f"{v.success:.2f}" if v else "-",
                     "tokens": f"{v.avg_tokens:.0f}" if v else "-"})
    meta = {
        "promoted": dg.MetadataValue.md(md_table(rows, ["prompt", "version", "parents", "experiment", "val success",
                                                        "tokens"])),
        "n_promoted": dg.MetadataValue.int(len(out.promoted)),
        "significance_gate": dg.MetadataValue.text(
            f"promoted only when the paired {out.gate_level:.0%} lower confidence bound of the validation gain over "
            f"production is above min_improvement; higher mean but not significant: "
            f"{', '.join(out.not_significant) or 'none'}"),
        "production_validation_success": dg.MetadataValue.float(
            out.production_validation.success if out.production_validation else 0.0),
    }
    if out.production_id in out.test:
        meta["production_test_success"] = dg.MetadataValue.float(out.test[out.production_id].success)
    if out.best is not None and out.best.prompt_id in out.test:
        meta["best_candidate_test_success"] = dg.MetadataValue.float(out.test[out.best.prompt_id].success)
    if out.report_skipped:
        meta["report_skipped_for_budget"] = dg.MetadataValue.int(len(out.report_skipped))
    return dg.Output(out, metadata=meta)
