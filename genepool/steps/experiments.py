"""Step 4, experiment results: every contender run on the regression set (targets: train items production
failed; controls: items it passed), whole candidates only: each candidate is one batch of calls (up to
``llm_concurrency`` at once, answers in item order) whose whole cost is checked against the budget first."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from genepool import store
from genepool.core.benchmark import Item
from genepool.core.budget import BudgetExceeded
from genepool.runner import ItemResult
from genepool.steps.context import OPTIMISER_ACTOR, Generation
from genepool.steps.population import Population
from genepool.steps.traces import TraceSet, stratified

log = logging.getLogger(__name__)

_MOVES_FROM = {"experimental": ("draft",), "candidate": ("draft", "experimental")}


@dataclass(frozen=True, eq=False)
class ExperimentResults:
    """One row per (prompt, item, role) in ``frame`` (columns ``store.RESULT_COLUMNS``)."""

    partition_key: str
    production_id: str
    frame: pd.DataFrame
    skipped_for_budget: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def candidates(self) -> int:
        return int(self.frame["prompt_id"].nunique()) if len(self.frame) else 0


def result_row(key: str, prompt_id: str, role: str, r: ItemResult) -> dict:
    return {
        "experiment_id": key, "prompt_id": prompt_id, "item_id": r.item_id, "split": r.split, "role": role,
        "task": r.task, "success": r.success, "score": r.score, "output": r.output,
        "checker_message": r.checker_message, "signature": r.signature, "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens, "latency_ms": r.latency_ms, "cost_usd": r.cost_usd,
        "cached": r.cached,
    }


def label_once(gen: Generation, prompt_id: str, label: str, reason: str, details: dict | None = None) -> None:
    """Move a prompt forward in its lifecycle, never back: a re-run must not demote a prompt a person
    has since approved, rejected or archived."""
    if gen.registry.get(prompt_id).state in _MOVES_FROM[label]:
        gen.registry.label(prompt_id, label, OPTIMISER_ACTOR, reason, details)


def regression_set(gen: Generation, traces: TraceSet) -> list[tuple[Item, str]]:
    """Targets (train items production failed) then controls (items it passed), spread over tasks."""
    rows = [r for r in traces.rows() if r.item_id in gen.by_id]
    failed = [gen.by_id[r.item_id] for r in rows if not r.success]  # type: ignore[index]
    passed = [gen.by_id[r.item_id] for r in rows if r.success]  # type: ignore[index]
    targets = stratified(failed, gen.config.n_targets, gen.rng("targets"))[: gen.config.n_targets]
    controls = stratified(passed, gen.config.n_controls, gen.rng("controls"))[: gen.config.n_controls]
    return [(it, "target") for it in targets] + [(it, "control") for it in controls]


def run_experiments(gen: Generation, population: Population, traces: TraceSet) -> ExperimentResults:
    regression = regression_set(gen, traces)
    prod_id = population.production_id
    # production's own results come from its traces (same prompt, same items: no new rollouts)
    by_item = {r.item_id: r for r in traces.rows()}
    rows: list[dict] = []
    for it, role in regression:
        t = by_item[it.id]
        rows.append(result_row(gen.key, prod_id, role, ItemResult(
            it.id, it.split, it.task, it.input, it.expected, t.output, t.success, 1.0 if t.success else 0.0,
            t.signature, t.checker_message, t.prompt_tokens, t.completion_tokens, t.latency_ms, 0.0, True)))
    skipped: list[str] = []
    with gen.step("experiments") as meter:
        runner = meter.runner()
        n_total = len(population.contenders)
        for n, pid in enumerate(population.contenders, 1):
            remaining = meter.tracker.remaining_rollouts
            if remaining is not None and remaining < len(regression):
                skipped.append(pid)  # whole candidates only: never a half-evaluated one
                continue
            rec = gen.registry.get(pid)
            label_once(gen, pid, "experimental", f"evaluated in {gen.key}")
            try:  # one batch per candidate (up to llm_concurrency calls at once), its whole cost checked first
                res = runner.run_candidate(rec.genome, [it for it, _ in regression], purpose="experiment")
            except BudgetExceeded:
                skipped.append(pid)
                continue
            mine = [result_row(gen.key, pid, role, r) for (_, role), r in zip(regression, res, strict=True)]
            rows += mine
            # progress, captured in Dagster's run view (dagster.yaml python_logs: managed_python_loggers genepool)
            solved = sum(1 for r in mine if r["success"])
            left = meter.tracker.remaining_rollouts
            log.info("%s: candidate %d of %d (%s): %d/%d solved; rollouts left %s", gen.key, n, n_total, pid,
                     solved, len(mine), "unlimited" if left is None else left)
        store.replace_results(gen.db, gen.key, ("target", "control"), rows)
    if skipped:
        log.warning("%s: budget left no room to evaluate %d candidates: %s", gen.key, len(skipped), skipped)
    return ExperimentResults(gen.key, prod_id, pd.DataFrame(rows, columns=store.RESULT_COLUMNS), tuple(skipped))
