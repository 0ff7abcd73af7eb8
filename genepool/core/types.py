"""Plain data the evolution engine works on (no Dagster, no database).

Traces arrive as plain dicts (``TraceRow`` documents the keys); evaluations of candidates as
``CandidateEval`` holding one ``ItemOutcome`` per benchmark item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from genepool.core.genome import Genome

ROLES = ("target", "control", "validation")


class TraceRow(TypedDict, total=False):
    """One scored rollout, as the evaluation step stores it (all keys optional except where used)."""

    trace_id: str
    item_id: str
    task: str
    split: str
    input: str
    output: str
    expected: Any
    success: bool
    signature: str
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
    """Read ``name`` from a dict or an object (benchmark ``Item`` dataclasses and trace dicts alike)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)
