"""What every arm of the comparison shares: metered LLM access, test evaluation, result records.

Accounting is the same for every arm:

- a **rollout** is one call of the task model on one benchmark input while the arm optimises
  (served from the PostgreSQL cache or not: the budget is logical, the cache only saves time);
- **reflection** calls (an optimiser asking the model to write or improve a prompt) are counted apart;
- the **test** evaluation of the final prompt is counted apart and never against the budget;
- ``model_ms`` sums the original latency of every call (a cached answer keeps the latency of the
  call that produced it), so it measures compute independently of what the cache held on this run.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from genepool.core.benchmark import Item
from genepool.core.checkers import check
from genepool.core.genome import Genome, render_template
from genepool.llm import Completion, LLMClient

REFLECTION_WORDS = ("reflect", "propos", "mutat", "prompt_model")


def is_reflection(purpose: str) -> bool:
    """Calls whose purpose names reflection/proposal are not rollouts."""
    p = purpose.lower()
    return any(w in p for w in REFLECTION_WORDS)


@dataclass
class CallRecord:
    phase: str
    purpose: str
    cached: bool
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    text: str = ""  # the raw completion (DSPy arms are scored on it, not on their parsed field)


class RolloutBudgetExhausted(RuntimeError):
    """Raised instead of a rollout once an arm's optimisation has spent its whole budget."""


class MeteredLLM:
    """Same ``chat`` interface as ``LLMClient``; records every call with the current phase.

    One per arm run, over the shared cached client, so counts are per arm. With ``rollout_cap`` set, a
    rollout asked for in the ``optimize`` phase once ``rollout_cap`` rollouts are spent is refused with
    ``RolloutBudgetExhausted`` (nothing is sent, nothing recorded, ``refused`` counts it): a hard budget for
    optimisers that cannot size their own search in calls. Reflection and test calls are never refused.
    """

    def __init__(self, client: LLMClient, rollout_cap: int | None = None):
        self.client = client
        self.records: list[CallRecord] = []
        self._phase = "optimize"
        self.rollout_cap = rollout_cap
        self.refused = 0
        self._optimize_rollouts = 0

    def __getattr__(self, name: str) -> Any:
        # model, provider, db, cost_table, calls_made, calls_cached, ... come from the wrapped client
        if name == "client":
            raise AttributeError(name)
        return getattr(self.client, name)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        previous, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = previous

    def chat(
        self,
        messages: list[dict[str, str]],
        params: dict[str, Any] | None = None,
        *,
        purpose: str = "",
        partition_key: str | None = None,
    ) -> Completion:
        if (self.rollout_cap is not None and self._phase == "optimize" and not is_reflection(purpose)
                and self._optimize_rollouts >= self.rollout_cap):
            self.refused += 1
            raise RolloutBudgetExhausted(f"the budget of {self.rollout_cap} rollouts is spent")
        comp = self.client.chat(messages, params, purpose=purpose, partition_key=partition_key)
        self.records.append(
            CallRecord(self._phase, purpose, comp.cached, comp.prompt_tokens, comp.completion_tokens, comp.latency_ms,
                       comp.text)
        )
        if self._phase == "optimize" and not is_reflection(purpose):
            self._optimize_rollouts += 1
        return comp

    def summary(self, phase: str) -> dict[str, Any]:
        recs = [r for r in self.records if r.phase == phase]
        rollouts = [r for r in recs if not is_reflection(r.purpose)]
        refl = [r for r in recs if is_reflection(r.purpose)]
        by_purpose = Counter(r.purpose or "(none)" for r in recs)
        return {
            "calls": len(recs),
            "rollouts": len(rollouts),
            "reflection_calls": len(refl),
            "cached": sum(r.cached for r in recs),
            "prompt_tokens": sum(r.prompt_tokens for r in recs),
            "completion_tokens": sum(r.completion_tokens for r in recs),
            "rollout_tokens": sum(r.prompt_tokens + r.completion_tokens for r in rollouts),
            "reflection_tokens": sum(r.prompt_tokens + r.completion_tokens for r in refl),
            "model_ms": round(sum(r.latency_ms for r in recs), 1),
            "by_purpose": dict(sorted(by_purpose.items())),
            **({"rollout_cap": self.rollout_cap, "refused_over_cap": self.refused}
               if phase == "optimize" and self.rollout_cap is not None else {}),
        }


@dataclass
class TestEval:
    """Strict held-out result of one final prompt."""

    n: int
    successes: int
    success_rate: float
    mean_score: float
    avg_tokens: float  # prompt + completion tokens per item (all calls the item needed)
    avg_prompt_tokens: float
    avg_completion_tokens: float
    per_task: dict[str, float]
    signatures: dict[str, int]
    model_ms: float
    examples: list[dict[str, str]] = field(default_factory=list)  # a few failures, for the report
    outcomes: list[int] = field(default_factory=list)  # 1/0 per test item, in test order (paired statistics)
    tokens_per_item: list[int] = field(default_factory=list)  # prompt + completion tokens per test item

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def genome_params(genome: Genome) -> dict[str, Any]:
    p = genome.params
    return {"temperature": p.temperature, "max_tokens": p.max_tokens, "stop": list(p.stop)}


def system_with_turns(system: str, genome: Genome) -> Callable[[str], list[dict[str, str]]]:
    """Messages for a literal system text plus ``genome``'s few-shot turns (no Jinja rendering)."""

    def render(user_input: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": system}]
        if genome.example_format == "turns":
            for e in genome.examples:
                msgs += [{"role": "user", "content": e.input}, {"role": "assistant", "content": e.output}]
        msgs.append({"role": "user", "content": user_input})
        return msgs

    return render


def seed_system_text(genome: Genome) -> str:
    return render_template(genome.content())


def evaluate_outputs(items: list[Item], outputs: list[str], tokens: list[tuple[int, int]], model_ms: float) -> TestEval:
    """Score outputs with the strict checkers. ``tokens`` = (prompt, completion) per item."""
    if not items:
        raise ValueError("evaluate_outputs: items is empty; pass the test split")
    results = [check(it, out) for it, out in zip(items, outputs, strict=True)]
    per_task_hits: dict[str, list[bool]] = defaultdict(list)
    for it, r in zip(items, results, strict=True):
        per_task_hits[it.task].append(r.success)
    n = len(items)
    successes = sum(r.success for r in results)
    failures = [
        {"id": it.id, "task": it.task, "output": out[:160], "signature": r.signature}
        for it, out, r in zip(items, outputs, results, strict=True)
        if not r.success
    ]
    return TestEval(
        n=n,
        successes=successes,
        success_rate=round(successes / n, 4),
        mean_score=round(sum(r.score for r in results) / n, 4),
        avg_tokens=round(sum(p + c for p, c in tokens) / n, 1),
        avg_prompt_tokens=round(sum(p for p, _ in tokens) / n, 1),
        avg_completion_tokens=round(sum(c for _, c in tokens) / n, 1),
        per_task={t: round(sum(v) / len(v), 4) for t, v in sorted(per_task_hits.items())},
        signatures=dict(Counter(r.signature for r in results).most_common()),
        model_ms=round(model_ms, 1),
        examples=failures[:5],
        outcomes=[int(r.success) for r in results],
        tokens_per_item=[int(p + c) for p, c in tokens],
    )


def evaluate_messages(
    llm: MeteredLLM,
    items: list[Item],
    render: Callable[[str], list[dict[str, str]]],
    params: dict[str, Any],
    purpose: str,
) -> TestEval:
    """Run one prompt (``render(input) -> messages`` + decoding params) on ``items`` and score it."""
    outputs, tokens, ms = [], [], 0.0
    with llm.phase("test"):
        for it in items:
            comp = llm.chat(render(it.input), params, purpose=purpose)
            outputs.append(comp.text)
            tokens.append((comp.prompt_tokens, comp.completion_tokens))
            ms += comp.latency_ms
    return evaluate_outputs(items, outputs, tokens, ms)


def evaluate_genome(llm: MeteredLLM, items: list[Item], genome: Genome, purpose: str) -> TestEval:
    return evaluate_messages(llm, items, genome.messages, genome_params(genome), purpose)


@dataclass
class ArmContext:
    """Everything an arm needs; the same object is handed to every arm."""

    agent_type: str
    seed_genome: Genome
    train: list[Item]
    validation: list[Item]
    test: list[Item]
    client: LLMClient
    seed: int
    quick: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def metered(self) -> MeteredLLM:
        return MeteredLLM(self.client)


@dataclass
class ArmResult:
    arm: str  # e.g. "genepool", "gepa", "dspy-mipro", "dspy-bootstrap", "baseline"
    budget: int | None  # rollout budget given to the arm; None for budget-free arms
    status: str  # "ok" | "failed" | "unavailable"
    error: str | None = None
    test: dict[str, Any] | None = None  # TestEval.to_dict()
    optimize: dict[str, Any] = field(default_factory=dict)  # MeteredLLM.summary("optimize")
    wall_s: dict[str, float] = field(default_factory=dict)  # {"optimize": s, "test": s}
    final_prompt: Any = None  # what was evaluated on test (system text, genome dict, DSPy demos)
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # optimiser seed of a stochastic arm (None for deterministic arms)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rollouts(self) -> int:
        return int(self.optimize.get("rollouts", 0))


class Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}

    @contextlib.contextmanager
    def lap(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.laps[name] = round(self.laps.get(name, 0.0) + time.perf_counter() - start, 2)


def short_error(exc: BaseException, limit: int = 600) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
