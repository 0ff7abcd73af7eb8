"""The budget in front of a step's LLM clients: ``Meter`` has ``LLMClient.chat``'s signature, checks every cap
before each call with what the call may cost at most, and records the spend after it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genepool import store
from genepool.core.budget import BudgetTracker
from genepool.llm import Completion, LLMClient, normalise_params
from genepool.runner import BenchmarkRunner

if TYPE_CHECKING:
    from genepool.steps.context import Generation


def upper_bound_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """What a call may cost at most in tokens: a token is at least one byte of text, plus the chat
    template's few special tokens per message, plus the reply's ``max_tokens``."""
    prompt = sum(len(str(m.get("content", "")).encode()) + 8 for m in messages) + 8
    return prompt + int(max_tokens)


class Meter:
    """An LLM client seen through one step's budget, with the ``LLMClient.chat`` signature.

    Before each call: the step's caps (rollouts, tokens, USD) with what the call may cost at most, and
    the daily USD cap against every run's spend of the day (reserved atomically). After it: the spend is
    added to ``genepool.generation_spend`` at once, so a crash loses no spend and two writers add up.
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

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any] | None = None, *, purpose: str = "",
             partition_key: str | None = None) -> Completion:
        p = normalise_params(params or {})
        tokens = upper_bound_tokens(messages, p["max_tokens"])
        usd = self.client.cost_table.cost(self.client.model, tokens - p["max_tokens"], p["max_tokens"])
        self.tracker.check(1, tokens=tokens, usd=usd)
        cap = self.gen.config.max_usd_per_day
        reservation = store.reserve_daily_usd(self.db, cap, usd, self.gen.key) if cap is not None else None
        try:
            made = self.client.calls_made
            comp = self.client.chat(messages, params or {}, purpose=purpose,
                                    partition_key=partition_key or self.gen.key)
        finally:
            store.release_daily_usd(self.db, reservation)
        self.tracker.record(comp)
        store.add_spend(self.db, self.gen.key, self.step, 1, comp.total_tokens, 0.0 if comp.cached else comp.cost_usd,
                        self.client.calls_made - made)
        return comp

    def chat_many(self, requests: list[tuple[list[dict[str, str]], dict[str, Any] | None]], *, purpose: str = "",
                  partition_key: str | None = None) -> list[Completion]:
        """``LLMClient.chat_many`` within the budget: what ALL the calls may cost at most is checked (and
        reserved against the daily cap) before any is made, then each completion is recorded in order."""
        bounds = []
        for messages, params in requests:
            p = normalise_params(params or {})
            tokens = upper_bound_tokens(messages, p["max_tokens"])
            bounds.append((tokens, self.client.cost_table.cost(self.client.model, tokens - p["max_tokens"],
                                                               p["max_tokens"])))
        tokens, usd = sum(b[0] for b in bounds), sum(b[1] for b in bounds)
        self.tracker.check(len(requests), tokens=tokens, usd=usd)
        cap = self.gen.config.max_usd_per_day
        reservation = store.reserve_daily_usd(self.db, cap, usd, self.gen.key) if cap is not None else None
        try:
            made = self.client.calls_made
            comps = self.client.chat_many(requests, purpose=purpose, partition_key=partition_key or self.gen.key)
        finally:
            store.release_daily_usd(self.db, reservation)
        for comp in comps:
            self.tracker.record(comp)
        store.add_spend(self.db, self.gen.key, self.step, len(comps), sum(c.total_tokens for c in comps),
                        sum(0.0 if c.cached else c.cost_usd for c in comps), self.client.calls_made - made)
        return comps
