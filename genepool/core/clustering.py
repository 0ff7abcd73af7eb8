"""Group failed traces into failure modes, name them and suggest a rule that would fix each.

A failure mode is the pair (task, checker signature). Signatures are the stable codes the checkers
emit ("label_with_extra_text", "wrong_label", "json_missing_key:order_id", ...); a code with a
``:detail`` suffix is described by its prefix and the detail is kept in the name.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from genepool.core.types import field_of

MAX_EXAMPLES = 3

# signature prefix -> (what went wrong, rule that would fix it)
SIGNATURES: dict[str, tuple[str, str]] = {
    "label_with_extra_text": (
        "right label but extra text around it",
        "Answer with the label only, no other words.",
    ),
    "wrong_label": ("wrong label", "Read the whole message before choosing the label."),
    "label_not_in_set": (
        "answer is not one of the allowed labels",
        "Use exactly one of the allowed labels.",
    ),
    "no_number": ("no number in the answer", "Answer with the number only, as digits."),
    "wrong_number": ("wrong number", "Copy the number exactly as it appears in the message."),
    "number_with_extra_text": (
        "right number but extra text around it",
        "Reply with only the number, no words or units.",
    ),
    "not_json": ("answer is not a JSON object", "Reply with only a JSON object, no other text."),
    "json_missing_key": ("JSON lacks a required key", "Include every required key in the JSON object."),
    "json_wrong_value": ("JSON has a wrong value", "Copy values into the JSON exactly as written in the message."),
    "regex_no_match": ("answer has the wrong format", "Follow the required answer format exactly."),
    "too_long": ("answer is too long", "Keep the answer short: one line."),
    "empty_output": ("empty answer", "Always give an answer."),
    "llm_error": ("the model call failed", "Keep the prompt short."),
}
GENERIC_HINT = "Follow the required answer format exactly. Do not explain."


@dataclass(frozen=True)
class FailureCluster:
    key: str  # "<task>:<signature>"
    name: str  # readable: "sentiment: right label but extra text around it"
    share: float  # of all failures
    count: int
    example_trace_ids: tuple[str, ...]
    example_messages: tuple[str, ...]
    tasks: tuple[str, ...]
    hint: str
    rate: float = 0.0  # of all evaluated traces (failures and successes)
    signature: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FailureCluster:
        """Inverse of ``to_dict`` (e.g. clusters read back from a JSON asset)."""
        return cls(**{
            **d,
            "example_trace_ids": tuple(d.get("example_trace_ids", ())),
            "example_messages": tuple(d.get("example_messages", ())),
            "tasks": tuple(d.get("tasks", ())),
        })

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "share": self.share,
            "count": self.count,
            "example_trace_ids": list(self.example_trace_ids),
            "example_messages": list(self.example_messages),
            "tasks": list(self.tasks),
            "hint": self.hint,
            "rate": self.rate,
            "signature": self.signature,
        }


def describe_signature(signature: str) -> tuple[str, str]:
    """(readable description, fixing rule) of a checker signature such as 'json_missing_key:id'."""
    prefix, _, detail = signature.partition(":")
    if prefix in SIGNATURES:
        text, hint = SIGNATURES[prefix]
        if detail:
            text = f"{text} ({detail})"
            if prefix == "json_missing_key":
                hint = f'Always include the key "{detail}" in the JSON object.'
        return text, hint
    return (signature.replace("_", " ") or "unknown failure"), GENERIC_HINT


def cluster_failures(failed: list[dict], total: int) -> list[FailureCluster]:
    """Group failed traces by (task, signature), largest first (ties by key: deterministic).

    ``failed``: trace dicts (see ``TraceRow``) of failed rollouts; ``total``: the number of traces
    evaluated, successes included (used for ``rate``). ``share`` is the fraction of failures.
    """
    failed = [t for t in failed if not field_of(t, "success", False)]
    if total < len(failed):
        raise ValueError(
            f"total={total} is smaller than the {len(failed)} failed traces; pass the number of traces evaluated"
        )
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for t in failed:
        task = str(field_of(t, "task") or "task")
        sig = str(field_of(t, "signature") or "unknown")
        groups[(task, sig)].append(t)
    clusters = []
    n_failed = len(failed)
    for (task, sig), rows in groups.items():
        rows = sorted(rows, key=lambda r: str(field_of(r, "trace_id") or field_of(r, "item_id") or ""))
        text, hint = describe_signature(sig)
        examples = rows[:MAX_EXAMPLES]
        clusters.append(
            FailureCluster(
                key=f"{task}:{sig}",
                name=f"{task}: {text}",
                share=len(rows) / n_failed,
                count=len(rows),
                example_trace_ids=tuple(
                    str(field_of(r, "trace_id") or field_of(r, "item_id") or "") for r in examples
                ),
                example_messages=tuple(
                    str(field_of(r, "checker_message") or f"output {str(field_of(r, 'output', ''))[:80]!r}")
                    for r in examples
                ),
                tasks=(task,),
                hint=hint,
                rate=len(rows) / total if total else 0.0,
                signature=sig,
            )
        )
    clusters.sort(key=lambda c: (-c.count, c.key))
    return clusters
