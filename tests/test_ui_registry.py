"""The registry as an asset: an approval (approval_job) records a materialisation of prompt_registry whose
metadata shows the new production prompt with its approver and reason, the candidates, and the lineage."""

from __future__ import annotations

import dagster as dg

from assets.registry import registry_metadata
from genepool.agents import get_agent
from genepool.core.genome import Example
from genepool.registry import PromptRegistry
from orchestration.jobs import approval_job
from resources import PostgresResource
from resources.langfuse import LangfuseResource


def _two_candidates(db) -> tuple[str, str, str]:
    reg = PromptRegistry(db)
    spec = get_agent("support-desk")
    seed = reg.register("support-desk", spec.seed_genome, operator="seed")
    reg.label(seed.id, "production", "genepool-seed", "seed prompt")
    kids = []
    for text in ("my card was charged twice", "the app crashes on login"):
        child = reg.register("support-desk", spec.seed_genome.with_(examples=(Example(f"Rate: {text}", "high"),)),
                             parent_ids=[seed.id], generation=1, operator="mine_examples")
        reg.label(child.id, "candidate", "genepool", "beats production on validation")
        kids.append(child.id)
    return seed.id, kids[0], kids[1]


def test_approval_materialises_the_registry_with_approver_and_reason(db, db_url):
    seed_id, approved, waiting = _two_candidates(db)
    off = LangfuseResource(public_key_env="GENEPOOL_TEST_UNSET_LF_PUBLIC",
                           secret_key_env="GENEPOOL_TEST_UNSET_LF_SECRET")
    with dg.instance_for_test() as instance:
        result = approval_job.execute_in_process(
            run_config={"ops": {"approve_prompt": {"config": {
                "prompt_id": approved, "approver": "alice", "reason": "fewer wrong labels | same cost"}}}},
            resources={"postgres": PostgresResource(database_url=db_url), "langfuse": off}, instance=instance,
        )
        assert result.success
        [mat] = [e.event_specific_data.materialization for e in result.all_events
                 if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
        assert mat.asset_key == dg.AssetKey("prompt_registry")
        latest = instance.get_latest_materialization_event(dg.AssetKey("prompt_registry"))
        assert latest is not None and latest.run_id == result.run_id
    meta = {k: v.value for k, v in mat.metadata.items()}
    production = meta["production"]
    assert f"| support-desk | {approved} |" in production and "| alice |" in production
    assert "fewer wrong labels \\| same cost" in production  # a pipe in a reason cannot break the table
    assert f"| support-desk | {waiting} |" in meta["candidates"] and approved not in meta["candidates"]
    lineage = meta["lineage"].splitlines()
    row = next(line for line in lineage if line.startswith(f"| support-desk | {approved} |"))
    assert f"| production | {seed_id} |" in row and "| mine_examples | alice |" in row
    assert "| archived |" in next(line for line in lineage if line.startswith(f"| support-desk | {seed_id} |"))
    assert meta["last_decision"].startswith(f"approve {approved} (support-desk v")
    assert meta["candidates_waiting"] == 1


def test_registry_metadata_of_an_empty_registry(db):
    meta = registry_metadata(db)
    assert meta["prompts"].value == 0
    assert meta["production"].value == meta["lineage"].value == "_(none)_"
