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


def outcomes_from_traces(traces: list[Any], roles: dict[str, str], default_role: str | None = None) -> dict[str, ItemOutcome]:
    """Per-item outcomes of one candidate from its trace rows (``TraceRow`` dicts).

    ``roles`` maps item id -> "target" | "control" | "validation"; items without a role are skipped
    unless ``default_role`` is given. Tokens are prompt + completion tokens.
    """
    out: dict[str, ItemOutcome] = {}
    for t in traces:
        item_id = field_of(t, "item_id")
        if item_id is None:
            raise ValueError("a trace row has no 'item_id'; every trace must name the benchmark item it scored")
        role = roles.get(str(item_id), default_role)
        if role is None:
            continue
        out[str(item_id)] = ItemOutcome(
            success=bool(field_of(t, "success", False)),
            tokens=int(field_of(t, "prompt_tokens", 0) or 0) + int(field_of(t, "completion_tokens", 0) or 0),
            latency_ms=float(field_of(t, "latency_ms", 0.0) or 0.0),
            role=role,
        )
    return out
