"""Plain data the evolution engine works on (no Dagster, no database).

Traces reach the engine as ``TraceRow`` values; evaluations of candidates as ``CandidateEval`` holding
one ``ItemOutcome`` per benchmark item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genepool.core.genome import Genome

ROLES = ("target", "control", "validation")


@dataclass(frozen=True)
class TraceRow:
    """One scored rollout of the production prompt, as the clustering and mining operators read it."""

    trace_id: str
    item_id: str | None
    task: str
    split: str
    signature: str
    input: str
    output: str
    expected: Any
    success: bool
    checker_message: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


@dataclass(frozen=True)
class ItemOutcome:
    """How one candidate did on one item. ``role`` says what the item is used for in selection."""

    success: bool
    tokens: int = 0
    latency_ms: float = 0.0
    role: str = "validation"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"ItemOutcome.role={self.role!r} is unknown; use one of {ROLES}")


@dataclass
class CandidateEval:
    """A candidate prompt's per-item results (item id -> outcome)."""

    prompt_id: str
    genome: Genome
    results: dict[str, ItemOutcome] = field(default_factory=dict)


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a dict or an object (benchmark ``Item``s, ``TraceRow``s and dicts alike)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)
