"""The real-model path in seconds: one whole generation of support-desk through Dagster, the real step code
and the real PostgreSQL, with the model's answers replayed from a committed recording of the real
SmolLM2-135M (llama.cpp). Any request the recording does not hold fails the test (genepool/replay.py).

`make record` re-records the files (GENEPOOL_RECORD=1: the same tests, with the real model behind a
RecordingProvider, on a fresh database so that every request reaches the model). Re-record when a change
of prompts, rendering or parameters is intended; the test names the first unseen request otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from assets.partitions import RERUN_TAG, add_partitions, dagster_key_of
from genepool.db import Database
from genepool.llm import LlamaCppProvider, LLMClient, Provider
from genepool.replay import RecordingProvider, ReplayProvider
from resources import LLMResource, OptimizerResource, PostgresResource
from resources.langfuse import LangfuseResource

RECORDINGS = Path(__file__).resolve().parent / "data" / "recordings"
RECORD = os.environ.get("GENEPOOL_RECORD") == "1"
AGENT = "support-desk"
# Small enough to record in a few minutes on 2 cores; every step still runs (one reflective child too).
SMALL = dict(
    trace_items=8,
    population_size=3,
    n_targets=3,
    n_controls=2,
    validate_top=1,
    validation_items=4,
    test_items=3,
    max_rollouts=40,
    n_reflect=1,
)


class RecordedLLMResource(LLMResource):
    """Test double resource: the model behind ``llm``/``reflection_llm`` is a replay (or, when recording, the
    real SmolLM2 behind a RecordingProvider), registered in ``PROVIDERS`` under ``provider_id``."""

    provider_id: str
    PROVIDERS: ClassVar[dict[str, Provider]] = {}

    def client(self, db: Database) -> LLMClient:
        return LLMClient(self.PROVIDERS[self.provider_id], db)


@pytest.fixture
def instance(fresh_database_url):
    """A Dagster instance whose run/event-log/schedule storage is PostgreSQL (dagster-postgres)."""
    url = fresh_database_url("dagster").replace("postgresql://", "postgresql+psycopg2://")
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as inst:
        yield inst


@pytest.fixture
def model():
    """``model(name)``: the provider for recording ``<name>.jsonl`` (replayed, or recorded when GENEPOOL_RECORD=1).
    A replay must have served every request and used every recorded one; a recording is kept only if the
    test passed."""
    opened: list[tuple[str, Provider]] = []

    def open_(name: str, record: bool = RECORD) -> str:
        path = RECORDINGS / f"{name}.jsonl"
        provider: Provider = RecordingProvider(LlamaCppProvider(), path) if record else ReplayProvider(path)
        RecordedLLMResource.PROVIDERS[name] = provider
        opened.append((name, provider))
        return name

    yield open_
    for name, provider in opened:
        RecordedLLMResource.PROVIDERS.pop(name, None)
        if isinstance(provider, RecordingProvider):
            provider.abort()  # closed (kept) by the test body only after its assertions passed


def _finish(provider: Provider) -> None:
    if isinstance(provider, RecordingProvider):
        provider.close()
    else:
        assert isinstance(provider, ReplayProvider)
        provider.assert_complete(all_used=True)


def _resources(db_url: str, provider_id: str) -> dict:
    return {
        "postgres": PostgresResource(database_url=db_url),
        "llm": RecordedLLMResource(provider_id=provider_id),
        "reflection_llm": RecordedLLMResource(provider_id=provider_id),
        "optimizer": OptimizerResource(**SMALL),
        "langfuse": LangfuseResource(
            public_key_env="GENEPOOL_TEST_UNSET_LF_PK", secret_key_env="GENEPOOL_TEST_UNSET_LF_SK"
        ),
    }


def materialize(
    instance, db_url: str, key: str, provider_id: str, *, rerun: bool = False, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    """Materialise the library's generation ``key`` (e.g. ``support-desk/g0001``) as its grid cell."""
    from orchestration import definitions as d

    resources = _resources(db_url, provider_id)
    assert dg.materialize(d.registry_assets, instance=instance, resources=resources).success
    add_partitions(instance, [key])
    return dg.materialize(
        [*d.generation_assets, *d.checks.GENERATION_CHECKS],
        instance=instance,
        resources=resources,
        partition_key=dagster_key_of(key),
        tags={RERUN_TAG: "true"} if rerun else None,
        raise_on_error=raise_on_error,
    )


def _canon(value) -> str:
    return json.dumps(dataclasses.asdict(value), sort_keys=True, default=str)


def test_one_generation_replayed_then_warm_rerun_is_identical_and_free(instance, db_url, model):
    key = f"{AGENT}/g0001"
    name = model("support_desk_g1")
    res = materialize(instance, db_url, key, name)
    assert res.success
    assert "PostgresEventLogStorage" in type(instance.event_log_storage).__name__
    db = Database(db_url)

    calls = db.fetchall("SELECT provider, model, cached FROM genepool.llm_calls")
    assert calls and {(c["provider"], c["model"]) for c in calls} == {("llama_cpp", "SmolLM2-135M-Instruct.Q4_1.gguf")}

    traces = db.fetchall("SELECT * FROM genepool.traces WHERE partition_key = %s", (key,))
    assert len(traces) == SMALL["trace_items"]
    assert all(t["prompt_tokens"] > 0 and t["latency_ms"] > 0 for t in traces)

    cands = db.fetchall("SELECT * FROM genepool.candidates WHERE experiment_id = %s ORDER BY position", (key,))
    assert len(cands) == SMALL["population_size"]
    accepted = [c for c in cands if c["status"] == "accepted"]
    assert accepted
    for c in accepted:  # every accepted child is an immutable registry row that links its parents
        p = db.fetchone("SELECT * FROM genepool.prompts WHERE id = %s", (c["prompt_id"],))
        assert p["parent_ids"] and p["experiment_id"] == key and p["generation"] == 1
    reflect_calls = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE purpose = 'reflect'")["n"]
    assert reflect_calls == SMALL["n_reflect"]  # the reflective mutation asked the model too

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

    # the generation is closed (its promotion ran): a re-run without the tag (e.g. a backfill) is refused at once
    refused = materialize(instance, db_url, key, name, raise_on_error=False)
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    assert failure.step_key == "traces"
    assert (
        f"generation {key} is closed: its promotion already ran" in failure.event_specific_data.error.message
        and f"{RERUN_TAG}=true" in failure.event_specific_data.error.message
    )
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE NOT cached")["n"] == calls_before

    # warm re-run of the same partition on purpose: identical population and front, no new model call
    res2 = materialize(instance, db_url, key, name, rerun=True)
    assert res2.success
    pop2, front2 = res2.output_for_node("mutated_population"), res2.output_for_node("pareto_front")
    assert _canon(pop1) == _canon(pop2)
    assert _canon(front1) == _canon(front2)
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE NOT cached")["n"] == calls_before
    _finish(RecordedLLMResource.PROVIDERS[name])


def test_second_generation_partition_runs_with_its_checks(instance, db_url, model):
    """Two partitions exist: every check must look at its own partition only (regression test)."""
    g1 = model("support_desk_g1", record=False)  # recorded by the test above
    assert materialize(instance, db_url, f"{AGENT}/g0001", g1).success
    g2 = model("support_desk_g2")
    res = materialize(instance, db_url, f"{AGENT}/g0002", g2)
    assert res.success
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == {
        "traces_schema": True,
        "budget_not_exceeded": True,
        "front_not_empty": checks["front_not_empty"],
        "promoted_no_control_regression": True,
    }
    db = Database(db_url)
    parents = res.output_for_node("mutated_population").parents
    g1_front = {
        r["prompt_id"]
        for r in db.fetchall(
            "SELECT prompt_id FROM genepool.front_members WHERE experiment_id = %s"
            " AND (success_rate > 0 OR screen_success > 0)",
            (f"{AGENT}/g0001",),
        )
    }
    assert {p.prompt_id for p in parents[1:]} <= g1_front
    _finish(RecordedLLMResource.PROVIDERS[g1])
    _finish(RecordedLLMResource.PROVIDERS[g2])
