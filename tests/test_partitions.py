"""The agent × generation partitions (assets/partitions.py): Dagster's key <-> the library's key in one pair
of functions, validated; a run of an invalid cell fails at once with one line; a closed generation is
refused by its first step unless the run is tagged ``genepool/rerun=true``, and an unfinished one resumes."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from assets.partitions import (
    AGENTS,
    GENERATION_NUMBERS,
    RERUN_TAG,
    InvalidPartition,
    add_partitions,
    add_requests,
    closed_reason,
    dagster_key,
    dagster_key_of,
    library_key,
    library_key_of_tags,
    run_partition_tags,
)
from genepool.db import Database
from resources import LLMResource, OptimizerResource, PostgresResource
from resources.langfuse import LangfuseResource


def test_keys_map_one_to_one_and_are_validated():
    cell = dagster_key("support-desk", 3)
    assert (str(cell), cell.keys_by_dimension) == ("support-desk|g0003", {"agent": "support-desk",
                                                                          "generation": "g0003"})
    assert library_key(cell) == library_key("support-desk|g0003") == "support-desk/g0003"
    assert dagster_key_of("critic/g0012") == dagster_key("critic", 12)
    assert run_partition_tags("critic/g0012") == {"dagster/partition": "critic|g0012",
                                                  "dagster/partition/agent": "critic",
                                                  "dagster/partition/generation": "g0012"}
    assert library_key_of_tags(run_partition_tags("critic/g0012")) == "critic/g0012"
    assert library_key_of_tags({"dagster/partition": "support-desk/g0001"}) == "support-desk/g0001"  # by hand
    assert library_key_of_tags({"dagster/partition": "junk"}) is None and library_key_of_tags({}) is None
    bad = {
        "nobody|g0001": "partition nobody|g0001: agent 'nobody' is not a known agent type; use one of",
        "support-desk|g1": "partition support-desk|g1: generation 'g1' is not of the form 'gNNNN'",
        "support-desk|0001": "generation '0001' is not of the form 'gNNNN'",
        "support-desk/g0001": "is not an agent × generation key like 'support-desk|g0001'",
        "a|b|c": "is not an agent × generation key",
    }
    for key, message in bad.items():
        with pytest.raises(InvalidPartition, match=None) as err:
            library_key(key)
        assert message in str(err.value) and "\n" not in str(err.value), (key, str(err.value))
    with pytest.raises(InvalidPartition, match="agent 'planner' is not a known agent type"):
        dagster_key("planner", 1)
    with pytest.raises(InvalidPartition, match="generation=-1 must be an integer >= 0"):
        dagster_key("critic", -1)
    with pytest.raises(InvalidPartition, match="not of the form '<agent-type>/g<NNNN>'"):
        dagster_key_of("support-desk|g0001")
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in add_requests(
        ["support-desk/g0002", "critic/g0002", "critic/g0001"])] == [
        (AGENTS, ["critic", "support-desk"]), (GENERATION_NUMBERS, ["g0001", "g0002"])]


def _experiment(db: Database, key: str, finished: bool) -> None:
    agent, gen = key.split("/g")
    db.execute(
        "INSERT INTO genepool.experiments (id, agent_type, generation, seed, finished_at)"
        " VALUES (%s, %s, %s, 0, CASE WHEN %s THEN now() END)", (key, agent, int(gen), finished))


def test_closed_generations_are_those_promoted_or_followed(db):
    assert closed_reason(db, "support-desk/g0001") is None  # new
    _experiment(db, "support-desk/g0001", finished=True)
    _experiment(db, "support-desk/g0002", finished=False)
    _experiment(db, "critic/g0005", finished=False)
    assert closed_reason(db, "support-desk/g0001").startswith("its promotion already ran (")
    assert closed_reason(db, "support-desk/g0002") is None  # unfinished and the latest: a resume
    _experiment(db, "support-desk/g0003", finished=False)
    assert closed_reason(db, "support-desk/g0002") == "a later generation of support-desk exists (support-desk/g0003)"
    assert closed_reason(db, "critic/g0005") is None  # other agents' generations do not close it


def _traces_run(instance, db_url: str, key: str, tags: dict | None = None) -> tuple[dg.ExecuteInProcessResult, str]:
    """Materialise only the first step (traces) of one grid cell; the LLM is an address nothing listens on,
    so any step that got as far as calling it would fail with a connection error instead."""
    from orchestration import definitions as d

    llm = LLMResource(provider="openai_compatible", base_url="http://127.0.0.1:9/v1", model="unreachable",
                      api_key_env="GENEPOOL_TEST_PARTITIONS_KEY", max_retries=0, timeout_s=2)
    resources = {
        "postgres": PostgresResource(database_url=db_url),
        "llm": llm,
        "reflection_llm": llm,
        "optimizer": OptimizerResource(),
        "langfuse": LangfuseResource(public_key_env="GENEPOOL_TEST_UNSET_LF_PK",
                                     secret_key_env="GENEPOOL_TEST_UNSET_LF_SK"),
    }
    res = dg.materialize(d.generation_assets, instance=instance, resources=resources, partition_key=key,
                         selection=["traces"], tags=tags, raise_on_error=False)
    failures = [e for e in res.all_events if e.is_step_failure]
    if not failures:
        return res, ""
    data = failures[0].event_specific_data
    message = data.user_failure_data.description if data.user_failure_data else data.error.message
    return res, message


def test_a_run_of_an_invalid_or_closed_cell_fails_at_once_with_one_line(db_url, monkeypatch):
    monkeypatch.setenv("GENEPOOL_TEST_PARTITIONS_KEY", "stub-key")
    db = Database(db_url)
    with dg.DagsterInstance.ephemeral() as instance:
        # junk a person typed into the UI's "add partition" box: the run fails at once, one line
        instance.add_dynamic_partitions(AGENTS, ["nobody", "support-desk"])
        instance.add_dynamic_partitions(GENERATION_NUMBERS, ["g1", "g0001"])
        for key, expected in (("nobody|g0001", "partition nobody|g0001: agent 'nobody' is not a known agent type"),
                              ("support-desk|g1", "generation 'g1' is not of the form 'gNNNN'")):
            res, message = _traces_run(instance, db_url, key)
            assert not res.success and expected in message and "\n" not in message, message
        assert db.fetchone("SELECT count(*) AS n FROM genepool.experiments")["n"] == 0

        # a closed generation (its promotion ran), e.g. in a backfill over the whole grid: refused, named
        _experiment(db, "support-desk/g0001", finished=True)
        add_partitions(instance, [f"support-desk/g000{n}" for n in range(1, 5)])
        res, message = _traces_run(instance, db_url, "support-desk|g0001")
        assert not res.success
        assert message.startswith("generation support-desk/g0001 is closed: its promotion already ran (")
        assert f"launch the run with tag {RERUN_TAG}=true (CLI: genepool run --rerun)" in message
        # followed by a later generation: refused too
        _experiment(db, "support-desk/g0003", finished=False)
        _experiment(db, "support-desk/g0004", finished=False)
        res, message = _traces_run(instance, db_url, "support-desk|g0003")
        assert "is closed: a later generation of support-desk exists (support-desk/g0004)" in message
        row = db.fetchone("SELECT attempts FROM genepool.experiments WHERE id = 'support-desk/g0003'")
        assert row["attempts"] == 1  # refused before the step registered a new attempt

        # the latest, unfinished generation resumes: the guard lets it through (it then fails only on the
        # unreachable LLM, i.e. it got past the guard and registered its attempt)
        res, message = _traces_run(instance, db_url, "support-desk|g0004")
        assert "is closed" not in message
        assert db.fetchone("SELECT attempts FROM genepool.experiments WHERE id = 'support-desk/g0004'")["attempts"] == 2
        # and the tag re-runs a closed one on purpose
        res, message = _traces_run(instance, db_url, "support-desk|g0001", tags={RERUN_TAG: "true"})
        assert "is closed" not in message
        assert db.fetchone("SELECT attempts FROM genepool.experiments WHERE id = 'support-desk/g0001'")["attempts"] == 2
        logs = [e.message for e in res.all_events if e.event_type_value == "ENGINE_EVENT"] + [
            r.event_log_entry.user_message for r in instance.get_records_for_run(res.run_id).records]
        assert any("re-running closed generation support-desk/g0001" in m for m in logs), json.dumps(logs)[-2000:]
