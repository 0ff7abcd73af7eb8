"""promoted_prompts: front members that beat production become `candidate`; a person approves one."""


import dagster as dg

from assets.common import GROUP, generation_for, md_table
from assets.partitions import generations_partitions
from genepool.pipeline import promote
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
    pareto_front: dict,
) -> dg.Output[dict]:
    gen = generation_for(context, postgres, llm, optimizer)
    out = promote(gen, pareto_front)
    rows = []
    for p in out["promoted"]:
        rec = gen.registry.get(p["prompt_id"])
        rows.append({"prompt": p["prompt_id"], "version": p["version"], "parents": ", ".join(rec.parent_ids),
                     "experiment": rec.experiment_id, "val success": f"{p['validation']['success']:.2f}",
                     "tokens": f"{p['validation']['avg_tokens']:.0f}"})
    test = out["test"]
    meta = {
        "promoted": dg.MetadataValue.md(md_table(rows, ["prompt", "version", "parents", "experiment", "val success", "tokens"])),
        "n_promoted": dg.MetadataValue.int(len(out["promoted"])),
        "production_validation_success": dg.MetadataValue.float((out["production_validation"] or {}).get("success", 0.0)),
    }
    if out["production_id"] in test:
        meta["production_test_success"] = dg.MetadataValue.float(test[out["production_id"]]["success"])
    if out["promoted"] and out["promoted"][0]["prompt_id"] in test:
        meta["best_candidate_test_success"] = dg.MetadataValue.float(test[out["promoted"][0]["prompt_id"]]["success"])
    return dg.Output(out, metadata=meta)
