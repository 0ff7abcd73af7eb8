"""The whole Dagster code location (orchestration.definitions.defs): what it contains, that
`dagster definitions validate` accepts it, and the approval job run in process on a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import AGENTS, GENERATION_NUMBERS
from genepool.agents import get_agent
from genepool.core.genome import Example
from genepool.registry import PromptRegistry
from orchestration.definitions import defs
from orchestration.jobs import approval_job
from resources import PostgresResource
from resources.langfuse import LangfuseResource

ROOT = Path(__file__).resolve().parents[1]
GENERATION_ASSETS = ["traces", "failure_clusters", "mutated_population", "experiment_results", "pareto_front",
                     "promoted_prompts"]
DBT_MODELS = ["agent_prompt_metrics", "agent_health", "generation_front_stats", "promotion_history"]


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


def test_code_location_has_every_expected_asset(graph):
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"prompt_registry", "benchmark", *GENERATION_ASSETS, *DBT_MODELS} <= keys


def _is_agent_by_generation(pdef) -> bool:
    return isinstance(pdef, dg.MultiPartitionsDefinition) and {
        d.name: (type(d.partitions_def), d.partitions_def.name) for d in pdef.partitions_defs
    } == {"agent": (dg.DynamicPartitionsDefinition, AGENTS),
          "generation": (dg.DynamicPartitionsDefinition, GENERATION_NUMBERS)}


def test_generation_assets_share_the_agent_by_generation_partitions(graph):
    for name in GENERATION_ASSETS:
        assert _is_agent_by_generation(graph.get(dg.AssetKey(name)).partitions_def), name
    for name in ("prompt_registry", "benchmark", *DBT_MODELS):
        assert graph.get(dg.AssetKey(name)).partitions_def is None, name


def test_dbt_models_hang_under_the_python_assets_that_write_their_sources(graph):
    parents = {m: {k.to_user_string() for k in graph.get(dg.AssetKey(m)).parent_keys} for m in DBT_MODELS}
    assert {"traces", "experiment_results"} <= parents["agent_prompt_metrics"]
    assert {"traces", "promoted_prompts"} <= parents["agent_health"]
    assert {"pareto_front"} <= parents["generation_front_stats"]
    assert {"promoted_prompts"} <= parents["promotion_history"]
    python_assets = {"prompt_registry", "benchmark", *GENERATION_ASSETS}
    assert all(p <= python_assets for p in parents.values())  # no dangling dbt source keys


def test_jobs_and_sensors(graph):
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    assert {"generation_job", "approval_job", "metrics_job"} <= set(jobs)
    gen_job = defs.resolve_job_def("generation_job")
    assert _is_agent_by_generation(gen_job.partitions_def)
    selected = {k.to_user_string() for k in gen_job.asset_layer.selected_asset_keys}
    assert selected == set(GENERATION_ASSETS)  # no dbt models pulled into a generation run
    metrics = {k.to_user_string() for k in defs.resolve_job_def("metrics_job").asset_layer.selected_asset_keys}
    assert set(DBT_MODELS) <= metrics
    sensors = {s.name for s in defs.sensors}
    assert {"metric_threshold_sensor", "trace_ingest_sensor", "run_failure_recorder"} <= sensors
    assert defs.resolve_sensor_def("metric_threshold_sensor").job_name == "generation_job"


def test_dagster_definitions_validate_accepts_the_workspace(tmp_path, db_url):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "GENEPOOL_DATABASE_URL": db_url}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def _candidate(db) -> tuple[str, str]:
    """The agent's seed in production and one child labelled `candidate` (as promote() would)."""
    reg = PromptRegistry(db)
    spec = get_agent("support-desk")
    seed = reg.register("support-desk", spec.seed_genome, operator="seed")
    reg.label(seed.id, "production", "genepool-seed", "seed prompt")
    child = reg.register(
        "support-desk",
        spec.seed_genome.with_(examples=(Example("Rate the priority of: my card was charged twice", "high"),)),
        parent_ids=[seed.id], generation=1, operator="mine_examples",
    )
    reg.label(child.id, "candidate", "genepool", "beats production on validation")
    return seed.id, child.id


def _approval_config(prompt_id: str, decision: str = "approve") -> dict:
    return {"ops": {"approve_prompt": {"config": {"prompt_id": prompt_id, "approver": "alice",
                                                  "reason": "looks good", "decision": decision}}}}


def _resources(db_url: str) -> dict:
    # Langfuse off: the key variables named here are never set, so nothing is pushed anywhere.
    off = LangfuseResource(public_key_env="GENEPOOL_TEST_UNSET_LF_PUBLIC",
                           secret_key_env="GENEPOOL_TEST_UNSET_LF_SECRET")
    return {"postgres": PostgresResource(database_url=db_url), "langfuse": off}


def test_approval_job_in_process_puts_the_candidate_in_production(db, db_url):
    seed_id, cand_id = _candidate(db)
    result = approval_job.execute_in_process(
        run_config=_approval_config(cand_id), resources=_resources(db_url)
    )
    assert result.success
    assert result.output_for_node("approve_prompt") == {"prompt_id": cand_id, "state": "production"}
    reg = PromptRegistry(db)
    assert reg.get_prompt("support-desk").id == cand_id
    assert reg.get(seed_id).state == "archived"
    last = reg.history(cand_id)[-1]
    assert (last["label"], last["actor"], last["reason"]) == ("production", "alice", "looks good")


def test_approval_job_refuses_a_prompt_that_is_not_a_candidate(db, db_url):
    seed_id, cand_id = _candidate(db)
    result = approval_job.execute_in_process(
        run_config=_approval_config(seed_id), resources=_resources(db_url),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert any("is 'production', not 'candidate'" in m and "genepool prompts --state candidate" in m
               for m in messages), messages
    assert PromptRegistry(db).get_prompt("support-desk").id == seed_id
    assert PromptRegistry(db).get(cand_id).state == "candidate"
