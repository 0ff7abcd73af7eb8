"""Fault matrix 3c at the generation level: a whole generation through the openai_compatible provider
against a STUB server on 127.0.0.1 (tests/stub_llm_server.py; deterministic ``echo:`` answers) that
dies mid-generation. The run fails with one clear LLMError; a re-run after the server is back resumes
from the PostgreSQL cache, asks the server only what was never answered, and ends with the same rows
as a clean run."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest

from genepool.db import Database, migrate
from genepool.llm import LLMClient, LLMError, OpenAICompatibleProvider
from genepool.settings import GenerationConfig
from genepool.steps import Generation, run_generation
from tests.stub_llm_server import StubLLMServer

SMALL = GenerationConfig(
    seed=1234, trace_items=15, population_size=6, n_targets=6, n_controls=4, validate_top=2,
    validation_items=10, test_items=5, max_rollouts=200,
)
TABLES = ("experiments", "prompts", "candidates", "experiment_results", "front_members", "traces", "llm_cache")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generation(db: Database, port: int) -> Generation:
    provider = OpenAICompatibleProvider(f"http://127.0.0.1:{port}/v1", "stub-model", "GENEPOOL_STUB_KEY",
                                        timeout_s=5, max_retries=2, backoff_s=0.02)
    return Generation(db, LLMClient(provider, db), "support-desk", 1, SMALL)


def counts(db: Database) -> dict[str, int]:
    return {t: db.fetchone(f"SELECT count(*) AS n FROM genepool.{t}")["n"] for t in TABLES}


def canon(value) -> str:
    """A step result as JSON without measured wall-clock latencies (HTTP timing differs run to run; the
    ``objectives`` triple carries one too)."""

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if "latency" not in k and k != "objectives"}
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v

    return json.dumps(strip(dataclasses.asdict(value)), sort_keys=True, default=str)


@pytest.mark.probe
def test_server_dies_mid_generation_then_the_rerun_resumes_from_the_cache(db, fresh_database_url, probe):
    port = free_port()  # one address for both lives of the server: the cache key includes the base_url
    clean_url = fresh_database_url("clean")
    migrate(clean_url)
    clean_db = Database(clean_url)
    with StubLLMServer(port=port) as stub:
        clean = run_generation(generation(clean_db, port))
        total = stub.chat_requests
    assert total > 40

    answered = 30  # traces (15) and part of the experiments
    with StubLLMServer(port=port, die_after=answered) as stub, pytest.raises(LLMError) as err:
        run_generation(generation(db, port))
    msg = str(err.value)
    assert "\n" not in msg and f"127.0.0.1:{port}" in msg and "after 3 attempts" in msg
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_cache")["n"] == answered
    assert not db.fetchall("SELECT 1 FROM genepool.front_members"), "a generation without answers finished"

    with StubLLMServer(port=port) as stub:
        resumed = run_generation(generation(db, port))
        new_calls = stub.chat_requests
    assert new_calls == total - answered, "the resume repeated an answered call (or skipped one)"
    assert canon(resumed.front) == canon(clean.front) and canon(resumed.promotion) == canon(clean.promotion)
    got, want = counts(db), counts(clean_db)
    lost = sum(max(0, want[t] - got[t]) for t in TABLES)
    duplicated = sum(max(0, got[t] - want[t]) for t in TABLES)
    assert (lost, duplicated) == (0, 0), (got, want)
    probe("held: server died after 30 answers -> one-line LLMError; resume asked only the unanswered calls,"
          " rows equal a clean run", rows_lost=lost, rows_duplicated=duplicated, new_llm_calls_on_resume=new_calls,
          answered_before_death=answered, clean_run_calls=total)
