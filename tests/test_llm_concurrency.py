"""Concurrent LLM calls (chat_many, BenchmarkRunner.run_candidate) and the rate limit shared through
PostgreSQL, against a STUB OpenAI-compatible server on 127.0.0.1 with a fixed latency and an in-flight
counter (tests/stub_llm_server.py)."""

from __future__ import annotations

import threading

import pytest

from genepool.core.benchmark import Item
from genepool.core.budget import Budget, BudgetExceeded, BudgetTracker
from genepool.core.genome import Genome
from genepool.db import Database
from genepool.llm import LlamaCppProvider, LLMClient, OpenAICompatibleProvider, build_client
from genepool.ratelimit import RateLimiter, RateLimitError
from genepool.runner import BenchmarkRunner
from tests.stub_llm_server import StubLLMServer


def provider(stub: StubLLMServer) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(stub.base_url, "stub-model", "GENEPOOL_STUB_KEY", timeout_s=10, backoff_s=0.02)


def requests(n: int) -> list:
    return [([{"role": "user", "content": f"question {i}"}], {"max_tokens": 8}) for i in range(n)]


@pytest.mark.probe
def test_chat_many_bounded_in_flight_results_in_order_and_rerun_sends_nothing(db, probe):
    with StubLLMServer(latency_s=0.15) as stub:
        client = LLMClient(provider(stub), db, concurrency=4)
        out = client.chat_many(requests(12), purpose="t", partition_key="a/g0001")
        assert [c.text for c in out] == [f"echo: question {i}" for i in range(12)]
        assert 2 <= stub.peak_in_flight <= 4, stub.peak_in_flight
        assert stub.chat_requests == 12 and client.calls_made == 12
        rerun = LLMClient(provider(stub), db, concurrency=4)
        again = rerun.chat_many(requests(12))
        assert [c.text for c in again] == [c.text for c in out] and all(c.cached for c in again)
        assert stub.chat_requests == 12 and (rerun.calls_made, rerun.calls_cached) == (0, 12)
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_cache")["n"] == 12
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls")["n"] == 24
    probe("held: 12 calls at llm_concurrency 4: peak in flight <= 4, submission order kept, re-run sent 0",
          new_llm_calls_on_resume=0, peak_in_flight=stub.peak_in_flight)


def test_chat_many_calls_identical_requests_once():
    with StubLLMServer() as stub:
        client = LLMClient(provider(stub), None, concurrency=3)
        reqs = requests(3) + requests(3)
        out = client.chat_many(reqs)
        assert [c.text for c in out] == [f"echo: question {i % 3}" for i in range(6)]
        # db=None disables the cache, so the duplicates are called after the first wave: 3 + 3.
        assert stub.chat_requests == 6


def test_chat_many_with_db_serves_duplicates_from_cache(db):
    with StubLLMServer() as stub:
        client = LLMClient(provider(stub), db, concurrency=3)
        out = client.chat_many(requests(3) + requests(3))
        assert stub.chat_requests == 3 and [c.cached for c in out] == [False] * 3 + [True] * 3


def test_chat_many_error_raises_first_failure_and_keeps_answered_calls(db):
    with StubLLMServer(latency_s=0.05) as stub:
        stub.default = {}
        client = LLMClient(provider(stub), db, concurrency=2)
        # The 3rd request gets a 400 (not retried).
        stub.script = [{}, {}, {"status": 400, "body": "bad request"}]
        with pytest.raises(Exception, match="HTTP 400"):
            client.chat_many(requests(6))
        answered = db.fetchone("SELECT count(*) AS n FROM genepool.llm_cache")["n"]
        assert answered >= 2
        sent = stub.chat_requests
        out = LLMClient(provider(stub), db, concurrency=2).chat_many(requests(6))
        assert len(out) == 6 and stub.chat_requests - sent == 6 - answered, "the resume repeated an answered call"


def test_counters_are_thread_safe(db):
    with StubLLMServer() as stub:
        client = LLMClient(provider(stub), db, concurrency=8)
        client.chat_many(requests(40))
        assert client.calls_made == 40 == stub.chat_requests


def test_local_llama_cpp_keeps_concurrency_one():
    assert LLMClient(LlamaCppProvider(), None, concurrency=8).concurrency == 1
    with pytest.raises(ValueError, match="llm_concurrency"):
        LLMClient(LlamaCppProvider(), None, concurrency=0)


# --- the runner: a whole candidate at once ---------------------------------------------------------
def item(i: int) -> Item:
    return Item(id=f"it{i}", input=f"question {i}", expected=f"echo: question {i}", checker="regex", split="train",
                task="echo", checker_args={"pattern": rf"^echo: question {i}$"})


def test_run_candidate_reserves_the_whole_candidate_before_any_call(db):
    items = [item(i) for i in range(6)]
    genome = Genome(role="You echo.")
    with StubLLMServer(latency_s=0.05) as stub:
        llm = LLMClient(provider(stub), db, concurrency=3)
        short = BudgetTracker(Budget(max_rollouts=5))
        with pytest.raises(BudgetExceeded, match="max_rollouts"):
            BenchmarkRunner(llm, short).run_candidate(genome, items)
        assert stub.chat_requests == 0 and short.spent["rollouts"] == 0
        tracker = BudgetTracker(Budget(max_rollouts=6))
        results = BenchmarkRunner(llm, tracker, partition_key="a/g0001").run_candidate(genome, items)
        assert [r.item_id for r in results] == [it.id for it in items] and all(r.success for r in results)
        assert tracker.spent["rollouts"] == 6 and tracker.spent["tokens"] == sum(r.tokens for r in results)
        assert stub.chat_requests == 6 and stub.peak_in_flight <= 3
        # Same numbers as the sequential path (served from the cache now).
        seq = [BenchmarkRunner(llm, None).run_item(genome, it) for it in items]
        assert [(r.output, r.tokens) for r in seq] == [(r.output, r.tokens) for r in results]


# --- the shared rate limit ---------------------------------------------------------------------------
def test_rate_limit_bucket_is_shared_between_processes(db_url):
    a, b = Database(db_url), Database(db_url)  # two connections, as two processes would have
    la = RateLimiter(a, "http://127.0.0.1:1/v1|m", rpm_limit=60, burst_s=5)  # 1/s, bucket of 5
    lb = RateLimiter(b, "http://127.0.0.1:1/v1|m", rpm_limit=60, burst_s=5)
    assert [la.acquire() for _ in range(5)] == [0.0] * 5
    assert lb.acquire() > 0, "the second process must wait: the first one emptied the shared bucket"
    other = RateLimiter(b, "http://127.0.0.1:1/v1|other-model", rpm_limit=60, burst_s=5)
    assert other.acquire() == 0.0, "another (base_url, model) has its own bucket"
    row = a.fetchone("SELECT requests FROM genepool.llm_rate_buckets WHERE bucket = %s", ("http://127.0.0.1:1/v1|m",))
    assert row["requests"] == 6


def test_rate_limit_under_threads_grants_exactly_what_was_asked(db_url):
    limiters = [RateLimiter(Database(db_url), "k", rpm_limit=300, burst_s=2) for _ in range(4)]  # 5/s, bucket 10
    granted = []

    def worker(lim):
        for _ in range(5):
            lim.acquire()
            granted.append(1)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 20
    assert Database(db_url).fetchone("SELECT requests FROM genepool.llm_rate_buckets")["requests"] == 20
    assert sum(lim.waited_s for lim in limiters) > 0, "20 requests on a bucket of 10: someone had to wait"


def test_token_limit_refuses_a_request_that_can_never_fit_and_adjusts(db):
    lim = RateLimiter(db, "k", tpm_limit=600, burst_s=60)
    with pytest.raises(RateLimitError, match="can never fit tpm_limit=600"):
        lim.acquire(tokens=601)
    assert lim.acquire(tokens=500) == 0.0
    lim.adjust(-400)  # the call used 100 tokens, not 500: refund
    level = db.fetchone("SELECT tok_level FROM genepool.llm_rate_buckets WHERE bucket = 'k'")["tok_level"]
    assert 500 <= level <= 600


def test_rate_limit_is_charged_on_cache_misses_only(db):
    with StubLLMServer() as stub:
        client = build_client(db, provider="openai_compatible", base_url=stub.base_url, model="stub-model",
                              rpm_limit=1000, tpm_limit=100000, llm_concurrency=2)
        assert client.rate_limiter is not None and client.concurrency == 2
        client.chat_many(requests(3))
        client.chat_many(requests(3))  # all cached
        assert stub.chat_requests == 3
    row = db.fetchone("SELECT requests, tok_level FROM genepool.llm_rate_buckets")
    assert row["requests"] == 3 and row["tok_level"] <= 100000, "a refund never overfills the bucket"


def test_rate_limit_settings_are_validated():
    with pytest.raises(ValueError, match="rpm_limit"):
        RateLimiter(None, "k", rpm_limit=0)
    with pytest.raises(ValueError, match="need the database"):
        build_client(None, provider="openai_compatible", base_url="http://127.0.0.1:1/v1", model="m", rpm_limit=5)


@pytest.mark.probe
def test_stub_in_another_process_with_injected_429s_under_concurrency(db, probe):
    """The stub as a separate process (as the multi-process scale test runs it): every 4th request gets a
    429 with Retry-After; all 12 concurrent calls still answer, in order, and the 429s show as retries."""
    import json
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.stub_llm_server", "--latency", "0.05", "--fail-every", "4"],
                            cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])
        base = f"http://127.0.0.1:{port}/v1"
        client = LLMClient(OpenAICompatibleProvider(base, "stub-model", "GENEPOOL_STUB_KEY", backoff_s=0.02), db,
                           concurrency=3)
        out = client.chat_many(requests(12))
        assert [c.text for c in out] == [f"echo: question {i}" for i in range(12)]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
            stats = json.loads(resp.read())
        assert stats["statuses"].get("429", 0) >= 3 and stats["statuses"]["200"] == 12
        assert client.retries == stats["statuses"]["429"] and stats["peak_in_flight"] <= 3
        assert sum(c.attempts for c in out) == 12 + client.retries
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    probe("held: injected 429s under llm_concurrency 3 were retried; all 12 answered in submission order",
          retries=client.retries)
