"""Live smoke test on the real parts: the real SmolLM2-135M through llama.cpp (no recording), the embedded
PostgreSQL and Dagster materialising one tiny generation partition.

The full assertions on a generation run on replayed real-model answers in tests/test_generation_replay.py
(seconds); this test only proves that the live model path still works end to end (`make record`
re-records the replay with the same path).
"""

from __future__ import annotations

import dagster as dg
import pytest

from assets.partitions import add_partitions, dagster_key_of
from genepool.db import Database
from resources import LLMResource, OptimizerResource, PostgresResource
from resources.langfuse import LangfuseResource

TINY = dict(
    trace_items=3,
    population_size=1,
    n_targets=1,
    n_controls=1,
    validate_top=1,
    validation_items=2,
    test_items=1,
    max_rollouts=12,
)


@pytest.mark.slow
def test_one_tiny_generation_on_the_live_model(fresh_database_url, db_url):
    from orchestration import definitions as d

    resources = {
        "postgres": PostgresResource(database_url=db_url),
        "llm": LLMResource(),
        "reflection_llm": LLMResource(),
        "optimizer": OptimizerResource(**TINY),
        "langfuse": LangfuseResource(
            public_key_env="GENEPOOL_TEST_UNSET_LF_PK", secret_key_env="GENEPOOL_TEST_UNSET_LF_SK"
        ),
    }
    key = "support-desk/g0001"
    url = fresh_database_url("dagster").replace("postgresql://", "postgresql+psycopg2://")
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as instance:
        assert dg.materialize(d.registry_assets, instance=instance, resources=resources).success
        add_partitions(instance, [key])
        res = dg.materialize(
            [*d.generation_assets, *d.checks.GENERATION_CHECKS],
            instance=instance,
            resources=resources,
            partition_key=dagster_key_of(key),
        )
    assert res.success
    db = Database(db_url)
    live = db.fetchall("SELECT * FROM genepool.llm_calls WHERE NOT cached")
    assert live and all(c["provider"] == "llama_cpp" and c["prompt_tokens"] > 0 for c in live)
    assert all(c["model"].endswith(".gguf") for c in live)
    traces = db.fetchall("SELECT * FROM genepool.traces WHERE partition_key = %s", (key,))
    assert len(traces) == TINY["trace_items"] and all(t["latency_ms"] > 0 for t in traces)
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks["traces_schema"] is True and checks["budget_not_exceeded"] is True
