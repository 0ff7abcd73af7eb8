"""A whole generation's steps at ``llm_concurrency`` > 1: every step evaluates a candidate as ONE batch
(``BenchmarkRunner.run_candidate`` -> ``Meter.chat_many``), so calls overlap, yet the rows written are exactly
those of ``llm_concurrency`` 1 (answers in submission order), a re-run asks nothing, and the budget and spend
bookkeeping stay per call.

Against a STUB OpenAI-compatible server on 127.0.0.1 (tests/stub_llm_server.py: deterministic ``echo:`` answers,
a fixed latency, an in-flight counter) through the real ``openai_compatible`` provider and real PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genepool import store
from genepool.core.budget import BudgetExceeded
from genepool.db import Database, migrate
from genepool.llm import CostTable, LLMClient, LLMError, OpenAICompatibleProvider, RawCompletion
from genepool.settings import GenerationConfig
from genepool.steps import Generation, run_generation
from tests.stub_llm_server import StubLLMServer

SMALL = GenerationConfig(
    seed=1234, trace_items=15, population_size=6, n_targets=6, n_controls=4, validate_top=2,
    validation_items=10, test_items=5, max_rollouts=200,
)
LATENCY_S = 0.05
# every table a generation writes; columns that hold the server's clock or a sequence are left out
TABLES = ("experiments", "prompts", "prompt_events", "candidates", "experiment_results", "front_members", "traces",
          "trace_quarantine", "generation_spend", "llm_cache")
VOLATILE = {"created_at", "updated_at", "finished_at"}


class FixedClockProvider(OpenAICompatibleProvider):
    """TEST DOUBLE around the real openai_compatible provider: the HTTP call to the stub is real, but the
    reported latency is a fixed function of the token counts instead of the measured wall time, so rows
    (latency is an objective of the front) can be compared byte for byte across runs."""

    def complete(self, messages, params) -> RawCompletion:
        raw = super().complete(messages, params)
        return dataclasses.replace(raw, latency_ms=round(100.0 + 0.5 * (raw.prompt_tokens + raw.completion_tokens), 3))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(db: Database, port: int, concurrency: int, cost: CostTable | None = None) -> LLMClient:
    provider = FixedClockProvider(f"http://127.0.0.1:{port}/v1", "stub-model", "GENEPOOL_STUB_KEY", timeout_s=10,
                                  max_retries=2, backoff_s=0.02)
    assert provider.max_concurrency >= 4
    return LLMClient(provider, db, cost, concurrency=concurrency)


def generation(db: Database, port: int, concurrency: int, config: GenerationConfig = SMALL,
               cost: CostTable | None = None) -> Generation:
    return Generation(db, client(db, port, concurrency, cost), "support-desk", 1, config)


def snapshot(db: Database, ignore: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Every row of every table a generation writes, as sorted canonical JSON (clock columns, sequence ids and
    the ``ignore`` columns left out)."""
    out = {}
    for t in TABLES:
        rows = [{k: v for k, v in r.items() if k not in VOLATILE | ignore and not (k == "id" and isinstance(v, int))}
                for r in db.fetchall(f"SELECT * FROM genepool.{t}")]
        out[t] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


def fresh(fresh_database_url, name: str) -> Database:
    url = fresh_database_url(name)
    migrate(url)
    return Database(url)


@pytest.mark.probe
def test_generation_at_concurrency_4_writes_the_rows_of_concurrency_1_and_a_rerun_asks_nothing(
        db, fresh_database_url, probe):
    port = free_port()  # one address for every server: the base_url is part of the cache key and fingerprint
    serial_db = fresh(fresh_database_url, "serial")
    with StubLLMServer(port=port, latency_s=LATENCY_S) as stub:
        serial = run_generation(generation(serial_db, port, 1))
        serial_requests, serial_peak = stub.chat_requests, stub.peak_in_flight
    assert serial_peak == 1 and serial_requests > 60

    with StubLLMServer(port=port, latency_s=LATENCY_S) as stub:
        gen = generation(db, port, 4)
        parallel = run_generation(gen)
        requests, peak = stub.chat_requests, stub.peak_in_flight
    assert 1 < peak <= 4, peak
    assert requests == serial_requests
    want, got = snapshot(serial_db), snapshot(db)
    for t in TABLES:
        assert got[t] == want[t], f"genepool.{t} differs between llm_concurrency 4 and 1"
    assert len(got["experiment_results"]) > 60 and got["front_members"] and got["candidates"]
    assert dataclasses.asdict(parallel.front) == dataclasses.asdict(serial.front)
    assert dataclasses.asdict(parallel.promotion) == dataclasses.asdict(serial.promotion)
    spend = store.generation_spend(db, gen.key)
    assert sum(v.llm_calls for v in spend.steps.values()) == requests  # one call counted per request answered

    with StubLLMServer(port=port, latency_s=LATENCY_S) as stub:
        run_generation(generation(db, port, 4))
        rerun_requests = stub.chat_requests
    assert rerun_requests == 0
    # the re-run (attempt 2) rewrote the same rows, every answer now served from the cache
    assert db.fetchone("SELECT attempts FROM genepool.experiments")["attempts"] == 2
    assert all(r["cached"] for r in db.fetchall("SELECT cached FROM genepool.experiment_results"))
    assert snapshot(db, frozenset({"attempts", "cached"})) == snapshot(serial_db, frozenset({"attempts", "cached"}))
    probe("held: a generation at llm_concurrency 4 overlapped calls (peak in flight 2..4) and wrote exactly the rows"
          " of llm_concurrency 1; its re-run sent 0 requests", rows_lost=0, rows_duplicated=0,
          new_llm_calls_on_resume=rerun_requests, peak_in_flight=peak, requests=requests)


CHILD = """
import sys
from genepool.db import Database
from genepool.steps import run_generation
from tests.test_steps_concurrency import generation
db = Database(sys.argv[1])
run_generation(generation(db, int(sys.argv[2]), 4))
"""


@pytest.mark.probe
def test_sigkill_mid_batch_loses_no_answer_and_the_resume_asks_only_the_rest(db, db_url, fresh_database_url, probe):
    """A generation at llm_concurrency 4 is SIGKILLed while a batch is in flight: every answered call is in the
    cache and the ledger; the resume at llm_concurrency 4 asks only what was never answered and ends with the
    rows of an uninterrupted run."""
    port = free_port()
    clean_db = fresh(fresh_database_url, "kill_clean")
    with StubLLMServer(port=port, latency_s=LATENCY_S) as stub:
        run_generation(generation(clean_db, port, 4))
        total = stub.chat_requests
    root = Path(__file__).resolve().parents[1]
    with StubLLMServer(port=port, latency_s=0.3) as stub:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, db_url, str(port)], cwd=root, text=True,
                                env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while stub.chat_requests < 24 or stub.in_flight < 2:  # into the experiments, a batch in flight
            assert proc.poll() is None, f"the child ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "the child never got to a concurrent batch"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        asked = stub.chat_requests
    assert proc.returncode == -signal.SIGKILL
    cached = db.fetchone("SELECT count(*) AS n FROM genepool.llm_cache")["n"]
    ledger = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE NOT cached")["n"]
    # every answer that arrived is cached (the ledger row follows the cache row: a kill between the two may leave
    # a running call's ledger row out); the requests still in flight were never answered
    assert ledger <= cached < asked and cached - ledger <= 4

    with StubLLMServer(port=port, latency_s=LATENCY_S) as stub:
        run_generation(generation(db, port, 4))
        resumed = stub.chat_requests
    assert resumed == total - cached  # nothing answered was asked again, nothing unanswered was skipped
    assert snapshot(db, frozenset({"attempts", "cached"})) == snapshot(clean_db, frozenset({"attempts", "cached"}))
    assert store.generation_spend(db, "support-desk/g0001").llm_calls == ledger + resumed  # both runs' calls count
    probe("held: SIGKILL with a concurrent batch in flight: answered calls were in the cache and ledger, the"
          " resume asked only the rest, rows equal an uninterrupted run", rows_lost=0, rows_duplicated=0,
          new_llm_calls_on_resume=resumed, answered_before_kill=cached, asked_before_kill=asked)


def test_tight_usd_cap_stops_at_the_same_call_at_every_concurrency(db, fresh_database_url):
    """When a candidate's loose upper-bound cost does not fit, its calls are checked one by one: a tight cap
    then leaves out the same candidates (and spends the same) at llm_concurrency 1 and 4, never overshooting."""
    port = free_port()
    price = CostTable({"stub-model": (1000.0, 1000.0)})  # USD per million tokens: $0.001 a token
    # uncapped, this generation spends ~$7.7 (traces 1.18, experiments 4.53, validation 1.59, report 0.42)
    cfg = dataclasses.replace(SMALL, max_usd=5.0)
    serial_db = fresh(fresh_database_url, "serial_usd")
    with StubLLMServer(port=port, latency_s=0.01) as stub:
        serial = run_generation(generation(serial_db, port, 1, cfg, price))
    with StubLLMServer(port=port, latency_s=0.01) as stub:
        gen = generation(db, port, 4, cfg, price)
        parallel = run_generation(gen)
        peak = stub.peak_in_flight
    assert peak > 1  # the candidates that fit the cap ran concurrently
    assert parallel.results.skipped_for_budget == serial.results.skipped_for_budget
    assert parallel.results.skipped_for_budget or parallel.front.baseline_validation is None
    assert snapshot(db) == snapshot(serial_db)
    spent = db.fetchone("SELECT sum(cost_usd) AS usd FROM genepool.llm_calls WHERE partition_key = %s",
                        (gen.key,))["usd"]
    assert 0 < spent <= cfg.max_usd
    assert store.generation_spend(db, gen.key).usd == pytest.approx(spent)


def test_batch_over_the_rollout_cap_calls_nothing(db):
    port = free_port()
    cfg = dataclasses.replace(SMALL, max_rollouts=3)
    with StubLLMServer(port=port) as stub:
        gen = generation(db, port, 4, cfg)
        gen.register()
        with gen.step("experiments") as meter, pytest.raises(BudgetExceeded, match="max_rollouts"):
            meter.chat_many([([{"role": "user", "content": f"q{i}"}], {"max_tokens": 8}) for i in range(4)])
        assert stub.chat_requests == 0
    assert store.generation_spend(db, gen.key).steps["experiments"].rollouts == 0


@pytest.mark.probe
def test_error_mid_batch_records_every_answered_call_and_the_resume_asks_only_the_rest(db, probe):
    """One request of a concurrent batch fails for good: the calls running finish, every answered call is in
    the cache AND in the step's spend (tokens, USD, calls) before the error goes up; the resumed batch asks
    the server only for the failed request."""
    port = free_port()
    price = CostTable({"stub-model": (1.0, 1.0)})
    batch = [([{"role": "user", "content": f"question {i}"}], {"max_tokens": 8}) for i in range(8)]
    # the 3rd request to arrive answers HTTP 400 (not retried); the others answer normally
    with StubLLMServer(port=port, latency_s=0.05, script=[{}, {}, {"status": 400, "body": "bad"}]) as stub:
        gen = generation(db, port, 4, cost=price)
        gen.register()
        with gen.step("experiments") as meter, pytest.raises(LLMError, match="HTTP 400"):
            meter.chat_many(batch, purpose="experiment")
        asked = stub.chat_requests
    answered = db.fetchone("SELECT count(*) AS n FROM genepool.llm_cache")["n"]
    assert answered == asked - 1 and answered >= 2
    ledger = db.fetchone("SELECT count(*) AS n, sum(cost_usd) AS usd, sum(prompt_tokens + completion_tokens) AS t"
                         " FROM genepool.llm_calls WHERE partition_key = %s", (gen.key,))
    spend = store.generation_spend(db, gen.key).steps["experiments"]
    assert (spend.llm_calls, spend.rollouts, spend.tokens) == (answered, answered, ledger["t"])
    assert spend.usd == pytest.approx(ledger["usd"]) and ledger["n"] == answered

    with StubLLMServer(port=port, latency_s=0.05) as stub:
        gen = generation(db, port, 4, cost=price)
        with gen.step("experiments") as meter:
            out = meter.chat_many(batch, purpose="experiment")
        resumed = stub.chat_requests
    assert [c.text for c in out] == [f"echo: question {i}" for i in range(8)]
    assert resumed == len(batch) - answered
    total = store.generation_spend(db, gen.key)
    assert total.usd == pytest.approx(db.fetchone("SELECT sum(cost_usd) AS usd FROM genepool.llm_calls")["usd"])
    probe("held: a concurrent batch with one failing call: answered calls cached and counted before the error;"
          " the resume asked only the unanswered", rows_lost=0, rows_duplicated=0, new_llm_calls_on_resume=resumed,
          answered_before_error=answered)
