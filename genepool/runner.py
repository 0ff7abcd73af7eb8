"""The benchmark runner: runs one prompt genome on benchmark items through the LLM client and the
item's checker, within a rollout budget.

Every rollout counts against the budget whether it is served from the cache or not, so a re-run of a
partition with a warm cache takes exactly the same path (and makes no LLM call).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from genepool.core.budget import BudgetTracker
from genepool.core.checkers import check
from genepool.core.genome import Genome
from genepool.llm import LLMClient


@dataclass(frozen=True)
class ItemResult:
    item_id: str
    split: str
    task: str
    input: str
    expected: str
    output: str
    success: bool
    score: float
    signature: str
    checker_message: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float
    cached: bool

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        return asdict(self)


def genome_params(genome: Genome) -> dict:
    p = genome.params
    return {"temperature": p.temperature, "max_tokens": p.max_tokens, "stop": list(p.stop)}


class BenchmarkRunner:
    def __init__(self, llm: LLMClient, budget: BudgetTracker | None = None, partition_key: str | None = None,
                 variables: dict | None = None):
        self.llm = llm
        self.budget = budget
        self.partition_key = partition_key
        self.variables = dict(variables or {})  # template variables, e.g. {"agent_type": "planner"}

    def run_item(self, genome: Genome, item, purpose: str = "rollout") -> ItemResult:
        if self.budget is not None:
            self.budget.check(1)
        comp = self.llm.chat(genome.messages(item.input, self.variables), genome_params(genome), purpose=purpose,
                             partition_key=self.partition_key)
        if self.budget is not None:
            self.budget.record(comp)
        return _item_result(item, comp)

    def run(self, genome: Genome, items: Iterable, purpose: str = "rollout") -> list[ItemResult]:
        return [self.run_item(genome, item, purpose) for item in items]

    def run_candidate(self, genome: Genome, items: Iterable, purpose: str = "rollout") -> list[ItemResult]:
        """One candidate on ``items``, through ``LLMClient.chat_many`` (up to ``llm_concurrency`` calls at
        once), results in item order. The rollout budget for the WHOLE candidate is reserved before any
        call: if it cannot be afforded, BudgetExceeded is raised and nothing is called. Each completion is
        then recorded (tokens, USD) in item order, so the tracker ends exactly as ``run`` would leave it."""
        items = list(items)
        if not items:
            return []
        if self.budget is not None:
            self.budget.check(len(items))
        requests = [(genome.messages(item.input, self.variables), genome_params(genome)) for item in items]
        chat_many = getattr(self.llm, "chat_many", None)  # a client wrapper without it runs the calls in turn
        if chat_many is not None:
            comps = chat_many(requests, purpose=purpose, partition_key=self.partition_key)
        else:
            comps = [self.llm.chat(m, p, purpose=purpose, partition_key=self.partition_key) for m, p in requests]
        results = []
        for item, comp in zip(items, comps, strict=True):
            if self.budget is not None:
                self.budget.record(comp)
            results.append(_item_result(item, comp))
        return results


def _item_result(item, comp) -> ItemResult:
    res = check(item, comp.text)
    return ItemResult(
        item_id=item.id,
        split=item.split,
        task=item.task,
        input=item.input,
        expected=item.expected,
        output=comp.text,
        success=res.success,
        score=res.score,
        signature=res.signature,
        checker_message=res.message,
        prompt_tokens=comp.prompt_tokens,
        completion_tokens=comp.completion_tokens,
        latency_ms=comp.latency_ms,
        cost_usd=comp.cost_usd,
        cached=comp.cached,
    )
