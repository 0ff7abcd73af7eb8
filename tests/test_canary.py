"""The canary (orchestration/canary.py): after an approval, the new production prompt is run on fixed train items
and stored as production traces (source 'canary'), so the threshold sensor watches the agent again without
Langfuse.

Real PostgreSQL, real dbt (agent_health), the real asset, sensors and threshold logic on real contexts; the
task model is a STUB OpenAI-compatible server on 127.0.0.1 (tests/stub_llm_server.py, echo answers).
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from genepool import approval
from genepool.agents import load_agent_benchmark
from genepool.registry import PromptRegistry
from orchestration.canary import CANARY_SOURCE, canary_sample, canary_sensor, production_canary
from orchestration.sensors import build_metric_threshold_sensor, parse_thresholds
from resources import LLMResource, PostgresResource
from resources.dbt import dbt_resource
from tests.stub_llm_server import StubLLMServer

SD = "support-desk"


def _health(db) -> dict:
    dbt_resource(db.url).cli(["run", "--select", "agent_health"]).wait()
    return db.fetchone("SELECT * FROM genepool_metrics.agent_health WHERE agent_type = %s", (SD,))


def _llm_calls(db) -> int:
    return db.fetchone("SELECT count(*) FILTER (WHERE NOT cached) AS n FROM genepool.llm_calls")["n"]


def test_canary_items_are_train_only_fixed_and_validated():
    train = {it.id for it in load_agent_benchmark(SD) if it.split == "train"}
    sample = canary_sample(SD, 20)
    assert len(sample) == 20 and {it.id for it in sample} <= train
    assert [it.id for it in canary_sample(SD, 20)] == [it.id for it in sample]  # seeded: the same every time
    assert len({it.task for it in sample}) > 1  # spread over tasks
    assert parse_thresholds({SD: {}})[SD].canary_items == 20
    with pytest.raises(ValueError, match="canary_items"):
        parse_thresholds({SD: {"canary_items": -1}})


@pytest.mark.timeout(600)
def test_after_an_approval_the_canary_lets_the_threshold_sensor_see_the_new_production_prompt(db, monkeypatch):
    monkeypatch.setenv("GENEPOOL_THRESHOLDS", json.dumps(
        {SD: {"min_success": 0.8, "min_runs": 5, "canary_items": 6, "cooldown_minutes": 0}}))
    monkeypatch.setenv("OPENAI_API_KEY", "stub-key")
    reg = PromptRegistry(db)
    seed = reg.register(SD, load_seed())
    reg.label(seed.id, "production", "seed", "initial")
    child = reg.register(SD, seed.genome.with_(instructions=(*seed.genome.instructions, "Be brief.")),
                         parent_ids=[seed.id], generation=1, operator="add_instruction")
    reg.label(child.id, "candidate", "genepool", "test")
    approval.approve(db, child.id, "alice", "cheaper")

    instance = dg.DagsterInstance.ephemeral()
    resources = {"postgres": PostgresResource(database_url=db.url)}
    threshold = build_metric_threshold_sensor()
    # right after the approval: the new production prompt has no trace, and the reason says the canary is due
    before = _health(db)
    assert (before["production_prompt_id"], before["runs"], before["canary_runs"]) == (child.id, 0, 0)
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        skip = threshold(ctx)
    assert f"{SD}: 0 recent production traces of the production prompt (< min_runs 5;" in skip.skip_message
    assert f"no canary traces of v{child.version} yet" in skip.skip_message

    # the approval changed the production prompt: the canary sensor asks for the canary job, once
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        asked = canary_sensor(ctx)
        assert len(asked.run_requests) == 1 and child.id in asked.run_requests[0].tags["genepool/reason"]
        again = canary_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=asked.cursor))
    assert isinstance(again, dg.SkipReason)

    with StubLLMServer() as stub:
        llm = LLMResource(provider="openai_compatible", base_url=stub.base_url, model="stub")
        res = dg.materialize([production_canary], instance=instance, resources={**resources, "llm": llm})
        assert res.success
        calls = _llm_calls(db)
        rows = db.fetchall("SELECT * FROM genepool.traces WHERE source = %s ORDER BY id", (CANARY_SOURCE,))
        assert len(rows) == 6 and calls == 6
        assert {(r["prompt_id"], r["prompt_version"], r["partition_key"]) for r in rows} == {
            (child.id, child.version, None)}
        train = {it.id for it in load_agent_benchmark(SD) if it.split == "train"}
        assert {r["item_id"] for r in rows} <= train  # never a validation or test item
        # a re-run measures nothing twice and calls no model
        again_res = dg.materialize([production_canary], instance=instance, resources={**resources, "llm": llm})
        assert again_res.success
        [mat] = again_res.get_asset_materialization_events()
        assert mat.materialization.metadata["new_traces"].value == 0
        assert _llm_calls(db) == calls
        assert db.fetchone("SELECT count(*) AS n FROM genepool.traces WHERE source = %s",
                           (CANARY_SOURCE,))["n"] == 6

    # after the metrics refresh the sensor sees min_runs satisfied for the new production version
    after = _health(db)
    assert (after["production_prompt_id"], after["runs"], after["canary_runs"]) == (child.id, 6, 6)
    solved = sum(r["success"] for r in rows)
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = threshold(ctx)
    if solved / 6 < 0.8:  # the stub's echo answers fail the strict checkers: a breach, so a generation starts
        [req] = result.run_requests
        assert req.tags["genepool/agent_type"] == SD and req.partition_key == f"{SD}|g0001"
        assert req.tags["genepool/reason"] == f"success {solved / 6:.2f} < 0.80"
    else:
        assert f"{SD}: success {solved / 6:.2f} >= 0.80" in result.skip_message
        assert f"{SD}: success {solved / 6:.2f} >= 0.80 and no cost limit (6 of 6 traces from the canary)" \
            in result.skip_message


def load_seed():
    from genepool.agents import get_agent

    return get_agent(SD).seed_genome
