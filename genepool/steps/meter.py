"""The budget in front of a step's LLM clients: ``Meter`` has ``LLMClient.chat``'s signature, checks every cap
before each call (or each batch) with what it may cost at most, and records the spend after each answer."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from genepool import store
from genepool.core.budget import BudgetExceeded, BudgetTracker
from genepool.llm import Completion, LLMClient, normalise_params
from genepool.runner import BenchmarkRunner

if TYPE_CHECKING:
    from genepool.steps.context import Generation

Request = tuple[list[dict[str, str]], dict[str, Any] | None]


def upper_bound_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """What a call may cost at most in tokens: a token is at least one byte of text, plus the chat
    template's few special tokens per message, plus the reply's ``max_tokens``."""
    prompt = sum(len(str(m.get("content", "")).encode()) + 8 for m in messages) + 8
    return prompt + int(max_tokens)


class Meter:
    """An LLM client seen through one step's budget, with the ``LLMClient.chat`` signature.

    Before each call (``chat``) or batch (``chat_many``): the step's caps (rollouts, tokens, USD) with what
    it may cost at most, and the daily USD cap against every run's spend of the day (reserved atomically).
    After each answer: its spend is added to ``genepool.generation_spend`` at once, so a crash loses no
    spend and two writers add up.
    """

    def __init__(self, gen: Generation, step: str, client: LLMClient, tracker: BudgetTracker):
        self.gen, self.step, self.client, self.tracker = gen, step, client, tracker
        self.db = gen.db

    @property
    def model(self) -> str:
        return self.client.model

    def using(self, client: LLMClient | None) -> Meter | None:
        """The same budget over another client (the reflection model); None stays None."""
        return None if client is None else Meter(self.gen, self.step, client, self.tracker)

    def runner(self) -> BenchmarkRunner:
        return BenchmarkRunner(self, None, partition_key=self.gen.key,  # type: ignore[arg-type]
                               variables={"agent_type": self.gen.agent_type})

    def _bound(self, messages: list[dict[str, str]], params: dict[str, Any] | None) -> tuple[int, float]:
        p = normalise_params(params or {})
        tokens = upper_bound_tokens(messages, p["max_tokens"])
        return tokens, self.client.cost_table.cost(self.client.model, tokens - p["max_tokens"], p["max_tokens"])

    def _reserve(self, n: int, tokens: int, usd: float) -> int | None:
        """Check the step's caps for ``n`` calls of at most ``tokens``/``usd`` in all, and reserve ``usd``
        against the daily cap (release the returned id once the calls are logged)."""
        self.tracker.check(n, tokens=tokens, usd=usd)
        cap = self.gen.config.max_usd_per_day
        return store.reserve_daily_usd(self.db, cap, usd, self.gen.key) if cap is not None else None

    def _record(self, comp: Completion) -> Completion:
        """One answered call: the step's tracker and ``genepool.generation_spend`` (one atomic statement)."""
        self.tracker.record(comp)
        store.add_spend(self.db, self.gen.key, self.step, 1, comp.total_tokens,
                        0.0 if comp.cached else comp.cost_usd, 0 if comp.cached else 1)
        return comp

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any] | None = None, *, purpose: str = "",
             partition_key: str | None = None) -> Completion:
        reservation = self._reserve(1, *self._bound(messages, params))
        try:
            comp = self.client.chat(messages, params or {}, purpose=purpose,
                                    partition_key=partition_key or self.gen.key)
        finally:
            store.release_daily_usd(self.db, reservation)
        return self._record(comp)

    def chat_many(self, requests: list[Request], *, purpose: str = "", partition_key: str | None = None
                  ) -> list[Completion]:
        """``LLMClient.chat_many`` within the budget: answers in submission order, up to the client's
        ``concurrency`` calls at once. Every request is validated and the batch's rollouts are checked before
        any call (a batch that does not fit raises BudgetExceeded and calls nothing).

        Tokens and USD: when what ALL the calls may cost at most fits the step's caps (and is reserved
        against the daily cap), the calls run concurrently. Otherwise (that upper bound is loose: a byte per
        token plus max_tokens per call) they run one by one, each checked with its own bound as ``chat``
        does, so a tight cap stops at the same call at every ``llm_concurrency``. Each answer's spend is
        recorded in submission order as soon as it and the ones before it are in; on an error the running
        calls finish and every answered call is recorded (and cached by the client) before the first error
        in submission order is raised."""
        requests = [(m, p or {}) for m, p in requests]
        if not requests:
            return []
        prepared = [self.client.prepare(m, p) for m, p in requests]  # invalid input fails before any call
        self.tracker.check(len(requests))  # rollouts are exact: the whole batch or nothing
        bounds = [self._bound(m, p) for m, p in requests]
        key = partition_key or self.gen.key
        try:
            reservation = self._reserve(len(requests), sum(b[0] for b in bounds), sum(b[1] for b in bounds))
        except BudgetExceeded:  # the whole batch might not fit: every call checked on its own, in order
            return [self.chat(m, p, purpose=purpose, partition_key=key) for m, p in requests]
        try:
            workers = min(self.client.concurrency, len({p.hash for p in prepared}))
            if workers <= 1:
                return [self._record(self.client.chat(m, p, purpose=purpose, partition_key=key))
                        for m, p in requests]
            return self._parallel(requests, [p.hash for p in prepared], workers, purpose, key)
        finally:
            store.release_daily_usd(self.db, reservation)

    def _parallel(self, requests: list[Request], hashes: list[str], workers: int, purpose: str, key: str
                  ) -> list[Completion]:
        firsts: dict[str, int] = {}
        for i, h in enumerate(hashes):
            firsts.setdefault(h, i)
        out: list[Completion] = []
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genepool-meter")
        futures: dict[int, Future] = {}
        try:
            for i in firsts.values():
                futures[i] = pool.submit(self.client.chat, *requests[i], purpose=purpose, partition_key=key)
            try:
                for i, (m, p) in enumerate(requests):
                    # a repeat of an earlier request is asked after that one was answered: the cache serves it
                    comp = futures[i].result() if i in futures else self.client.chat(m, p, purpose=purpose,
                                                                                      partition_key=key)
                    out.append(self._record(comp))
            except BaseException:
                for f in futures.values():
                    f.cancel()
                pool.shutdown(wait=True)  # the running calls finish (and are cached) ...
                for i in sorted(futures):  # ... and every answered one is counted before the error goes up
                    f = futures[i]
                    if i >= len(out) and f.done() and not f.cancelled() and f.exception() is None:
                        self._record(f.result())
                raise
        finally:
            pool.shutdown(wait=True)
        return out
