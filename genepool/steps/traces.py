"""Step 1, traces: the production prompt on a stratified sample of the train split, validated with
pandera; rows that fail the schema go to ``genepool.trace_quarantine`` with their reason."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import pandas as pd

from genepool import store
from genepool.core.benchmark import Item, split_items
from genepool.core.trace_schema import quarantine, store_traces, validate_traces
from genepool.core.types import TraceRow
from genepool.steps.context import Generation


@dataclass(frozen=True, eq=False)
class TraceSet:
    """The partition's validated traces. ``frame`` is what Dagster shows and the trace schema checks."""

    partition_key: str
    production_id: str
    frame: pd.DataFrame
    quarantined: int

    def __len__(self) -> int:
        return len(self.frame)

    def rows(self) -> tuple[TraceRow, ...]:
        return tuple(_trace_row(r) for r in self.frame.to_dict("records"))

    @property
    def success_rate(self) -> float:
        return float(self.frame["success"].mean()) if len(self.frame) else 0.0

    @property
    def avg_tokens(self) -> float:
        f = self.frame
        return float((f["prompt_tokens"] + f["completion_tokens"]).mean()) if len(f) else 0.0


def _trace_row(row: dict) -> TraceRow:
    meta = row.get("metadata") or {}
    return TraceRow(
        trace_id=row["id"],
        item_id=row.get("item_id"),
        task=meta.get("task", "unknown"),
        split=meta.get("split", "train"),
        signature=meta.get("signature", "ok" if row["success"] else "failed"),
        input=row["input"],
        output=row["output"],
        expected=row.get("expected"),
        success=bool(row["success"]),
        checker_message=row.get("checker_message") or "",
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        latency_ms=float(row["latency_ms"]),
    )


def stratified(items: list[Item], n: int, rng) -> list[Item]:
    """``n`` items spread evenly over tasks, deterministic for a given rng; 0 or too many = all."""
    by_task: dict[str, list[Item]] = defaultdict(list)
    for it in sorted(items, key=lambda i: i.id):
        by_task[it.task].append(it)
    for task in sorted(by_task):
        rng.shuffle(by_task[task])
    if n <= 0 or n >= len(items):
        return [it for t in sorted(by_task) for it in by_task[t]]
    out: list[Item] = []
    queues = [by_task[t] for t in sorted(by_task)]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def trace_id(key: str, prompt_id: str, item_id: str) -> str:
    return "tr_" + hashlib.sha256(f"{key}|{prompt_id}|{item_id}".encode()).hexdigest()[:20]


def collect_traces(gen: Generation) -> TraceSet:
    """Register the generation (the first step), run the production prompt on a sample of the train
    split within the budget, store the valid traces and quarantine the rest."""
    assert gen.items is not None
    with gen.step("traces", register=True) as meter:
        prod = gen.production()
        sample = stratified(split_items(gen.items, "train"), gen.config.trace_items, gen.rng("traces"))
        results = meter.runner().run_candidate(prod.genome, sample, purpose="traces")  # one batch, checked first
        rows = [
            {
                "id": trace_id(gen.key, prod.id, r.item_id),
                "agent_type": gen.agent_type,
                "prompt_id": prod.id,
                "prompt_version": prod.version,
                "partition_key": gen.key,
                "source": "runner",
                "item_id": r.item_id,
                "input": r.input,
                "output": r.output,
                "expected": r.expected,
                "success": r.success,
                "checker_message": r.checker_message,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "cost_usd": r.cost_usd,
                "latency_ms": r.latency_ms,
                "tool_calls": [],
                "error": None,
                "metadata": {"task": r.task, "signature": r.signature, "split": r.split},
            }
            for r in results
        ]
        valid, bad = validate_traces(pd.DataFrame(rows))
        with store.replacing_traces(gen.db, gen.key, "runner"):  # an earlier attempt's rows go
            store_traces(gen.db, valid, gen.key)
            if bad:
                quarantine(gen.db, bad, "runner", gen.key)
    return TraceSet(gen.key, prod.id, valid.reset_index(drop=True), len(bad))
