"""Budgets: rollouts, tokens and money, checked BEFORE each call so a run never overshoots.

Every rollout counts, cached or not, so a re-run of the same experiment stops at the same place
(results stay reproducible). Money counts only what was actually spent (a cached answer costs 0).
Token caps cannot know a reply's length in advance: ``check(n, tokens=...)`` takes the caller's
upper bound (prompt tokens + max_tokens) to stay under the cap. The daily USD cap, which reads every
run's calls from PostgreSQL, is in ``genepool.store``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class BudgetExceeded(RuntimeError):
    """A call would go over a budget cap. The message names the cap, what was spent and the limit."""

    def __init__(self, cap: str, spent: float, requested: float, limit: float):
        self.cap, self.spent, self.requested, self.limit = cap, spent, requested, limit
        fix = ("re-run tomorrow or raise max_usd_per_day" if cap == "max_usd_per_day" else
               f"raise {cap} for a new generation (a generation's settings are part of its fingerprint) or stop here")
        super().__init__(
            f"budget exceeded: {cap} would reach {spent + requested:g} (spent {spent:g} + this call {requested:g})"
            f" but the limit is {limit:g}; {fix}"
        )


@dataclass(frozen=True)
class Budget:
    max_rollouts: int | None = None
    max_tokens: int | None = None
    max_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_rollouts", "max_tokens", "max_usd"):
            v = getattr(self, name)
            bad = isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0
            if v is not None and bad:
                raise ValueError(f"Budget.{name}={v} must be a finite number >= 0, or None (no cap)")


@dataclass
class BudgetTracker:
    budget: Budget
    spent: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.spent) - {"rollouts", "tokens", "usd"}
        if unknown:
            raise ValueError(f"BudgetTracker.spent has unknown keys {sorted(unknown)}; use rollouts, tokens, usd")
        self.spent = {"rollouts": 0, "tokens": 0, "usd": 0.0, **self.spent}

    def check(self, n: int = 1, *, tokens: int = 0, usd: float = 0.0) -> None:
        """Raise BudgetExceeded if ``n`` more rollouts (of at most ``tokens``/``usd`` in all) would pass a cap."""
        b = self.budget
        if b.max_rollouts is not None and self.spent["rollouts"] + n > b.max_rollouts:
            raise BudgetExceeded("max_rollouts", self.spent["rollouts"], n, b.max_rollouts)
        if b.max_tokens is not None and (
            self.spent["tokens"] + tokens > b.max_tokens or self.spent["tokens"] >= b.max_tokens
        ):
            raise BudgetExceeded("max_tokens", self.spent["tokens"], tokens, b.max_tokens)
        if b.max_usd is not None and (self.spent["usd"] + usd > b.max_usd or self.spent["usd"] >= b.max_usd > 0):
            raise BudgetExceeded("max_usd", self.spent["usd"], usd, b.max_usd)

    def record(self, completion: Any, n: int = 1) -> None:
        """Count one call's ``Completion`` (prompt + completion tokens; cost unless served from cache)."""
        self.spent["rollouts"] += n
        self.spent["tokens"] += int(getattr(completion, "prompt_tokens", 0)) + int(
            getattr(completion, "completion_tokens", 0)
        )
        if not getattr(completion, "cached", False):
            self.spent["usd"] += float(getattr(completion, "cost_usd", 0.0) or 0.0)

    @property
    def remaining_rollouts(self) -> int | None:
        if self.budget.max_rollouts is None:
            return None
        return max(0, self.budget.max_rollouts - int(self.spent["rollouts"]))

    def exhausted(self) -> bool:
        try:
            self.check(1)
        except BudgetExceeded:
            return True
        return False
