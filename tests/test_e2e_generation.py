"""End to end on the real parts: embedded PostgreSQL (genepool data and Dagster's instance storage),
the real SmolLM2-135M model through llama.cpp, and Dagster materialising one generation partition."""

from __future__ import annotations

import dataclasses
import json

import dagster as dg
import pytest

from assets.partitions import GENERATIONS
from genepool.db import Database
from resources import LLMResource, OptimizerResource, PostgresResource
from resources.langfuse import LangfuseResource

SMALL = dict(trace_items=8, population_size=3, n_targets=3, n_controls=2, validate_top=1, validation_items=4,
             test_items=3, max_rollouts=40)


@pytest.fixture
def instance(fresh_database_url):
    """A Dagster instance whose run/event-log/schedule storage is PostgreSQL (dagster-postgres)."""
    url = fresh_database_url("dagster").replace("postgresql://", "postgresql+psycopg2://")
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as inst:
        yield inst


def _resources(db_url: str) -> dict:
    return {
        "postgres": PostgresResource(database_url=db_url),
        "llm": LLMResource(),
        "reflection_llm": LLMResource(),
        "optimizer": OptimizerResource(**SMALL),
        "langfuse": LangfuseResource(public_key_env="GENEPOOL_TEST_UNSET_LF_PK", secret_key_env="GENEPOOL_TEST_UNSET_LF_SK"),
    }


def _canon(value) -> str:
    return json.dumps(dataclasses.asdict(value), sort_keys=True, default=str)


def _materialize(instance, db_url, key):
    from orchestration import definitions as d

    assert dg.materialize(d.registry_assets, instance=instance, resources=_resources(db_url)).success
    instance.add_dynamic_partitions(GENERATIONS, [key])
    return dg.materialize(
        [*d.generation_assets, *d.checks.GENERATION_CHECKS],
        instance=instance,
        resources=_resources(db_url),
        partition_key=key,
    )


@pytest.mark.slow
def test_one_generation_on_real_model_then_warm_rerun_is_identical_and_free(instance, db_url):
    key = "support-desk/g0001"
    res = _materialize(instance, db_url, key)
    assert res.success
    assert "PostgresEventLogStorage" in type(instance.event_log_storage).__name__
    db = Database(db_url)

    traces = db.fetchall("SELECT * FROM genepool.traces WHERE partition_key = %s", (key,))
    assert len(traces) == SMALL["trace_items"]
    assert all(t["prompt_tokens"] > 0 and t["latency_ms"] > 0 for t in traces)

    cands = db.fetchall("SELECT * FROM genepool.candidates WHERE experiment_id = %s ORDER BY position", (key,))
    assert len(cands) == SMALL["population_size"]
    accepted = [c for c in cands if c["status"] == "accepted"]
    for c in accepted:  # every accepted child is an immutable registry row that links its parents
        p = db.fetchone("SELECT * FROM genepool.prompts WHERE id = %s", (c["prompt_id"],))
        assert p["parent_ids"] and p["experiment_id"] == key and p["generation"] == 1

    results = db.fetchall("SELECT * FROM genepool.experiment_results WHERE experiment_id = %s", (key,))
    roles = {r["role"] for r in results}
    assert {"target", "control", "validation"} <= roles or {"target", "validation"} <= roles
    spend = db.fetchall("SELECT * FROM genepool.generation_spend WHERE experiment_id = %s", (key,))
    assert sum(s["rollouts"] for s in spend if s["step"] != "test_report") <= SMALL["max_rollouts"]
    assert db.fetchall("SELECT * FROM genepool.front_members WHERE experiment_id = %s", (key,))

    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks["budget_not_exceeded"] is True
    assert checks["traces_schema"] is True
    assert checks["promoted_no_control_regression"] is True

    calls_before = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE NOT cached")["n"]
    pop1, front1 = res.output_for_node("mutated_population"), res.output_for_node("pareto_front")

    # warm re-run of the same partition: byte-identical population and front, no new LLM call
    res2 = _materialize(instance, db_url, key)
    assert res2.success
    pop2, front2 = res2.output_for_node("mutated_population"), res2.output_for_node("pareto_front")
    assert _canon(pop1) == _canon(pop2)
    assert _canon(front1) == _canon(front2)
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE NOT cached")["n"] == calls_before


@pytest.mark.slow
def test_second_generation_partition_runs_with_its_checks(instance, db_url):
    """Two partitions exist: every check must look at its own partition only (regression test)."""
    assert _materialize(instance, db_url, "support-desk/g0001").success
    res = _materialize(instance, db_url, "support-desk/g0002")
    assert res.success
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == {"traces_schema": True, "budget_not_exceeded": True, "front_not_empty": checks["front_not_empty"],
                      "promoted_no_control_regression": True}
    db = Database(db_url)
    parents = res.output_for_node("mutated_population").parents
    g1_front = {r["prompt_id"] for r in db.fetchall(
        "SELECT prompt_id FROM genepool.front_members WHERE experiment_id = 'support-desk/g0001'"
        " AND (success_rate > 0 OR screen_success > 0)")}
    assert {p.prompt_id for p in parents[1:]} <= g1_front
