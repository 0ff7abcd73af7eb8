"""Step 5, Pareto front: NSGA-II on [success, -tokens, -latency] over the regression set, a control
regression making a candidate infeasible; the front is then re-scored on validation, where GEPA-style
per-instance survivors are kept too."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from genepool import store
from genepool.core.benchmark import split_items
from genepool.core.budget import BudgetExceeded
from genepool.core.hypervolume import front_hypervolume
from genepool.core.selection import pareto_front, per_instance_survivors, rank_all, raw_objectives
from genepool.core.types import CandidateEval, ItemOutcome
from genepool.steps.context import Generation
from genepool.steps.experiments import ExperimentResults, result_row
from genepool.steps.traces import stratified

SCREEN = ("target", "control")
VALIDATION = ("validation",)


@dataclass(frozen=True)
class Scores:
    success: float
    avg_tokens: float
    avg_latency_ms: float


@dataclass(frozen=True)
class FrontMember:
    prompt_id: str
    version: str
    rank: int
    on_front: bool
    survivor: bool
    feasible: bool
    control_regressions: int
    screen: Scores
    validation: Scores | None

    @property
    def best_known(self) -> Scores:
        return self.validation or self.screen


@dataclass(frozen=True)
class Ranked:
    prompt_id: str
    rank: int
    feasible: bool
    control_regressions: int
    objectives: tuple[float, ...]


@dataclass(frozen=True)
class Front:
    partition_key: str
    production_id: str
    baseline_screen: Scores
    baseline_validation: Scores | None  # None when the budget left nothing to validate with
    members: tuple[FrontMember, ...]  # on the front or per-instance survivors, best rank first
    ranked: tuple[Ranked, ...]  # every screened prompt
    hypervolume: float
    validation_items: int

    @property
    def on_front(self) -> tuple[FrontMember, ...]:
        return tuple(m for m in self.members if m.on_front)


def _evals(gen: Generation, df: pd.DataFrame, roles: tuple[str, ...]) -> dict[str, CandidateEval]:
    evals: dict[str, CandidateEval] = {}
    for r in df.to_dict("records"):
        if r["role"] not in roles:
            continue
        ev = evals.get(r["prompt_id"])
        if ev is None:
            ev = evals[r["prompt_id"]] = CandidateEval(r["prompt_id"], gen.registry.get(r["prompt_id"]).genome)
        ev.results[r["item_id"]] = ItemOutcome(
            success=bool(r["success"]),
            tokens=int(r["prompt_tokens"]) + int(r["completion_tokens"]),
            latency_ms=float(r["latency_ms"]),
            role=r["role"] if r["role"] in ("target", "control") else "validation",
        )
    return evals


def _scores(ev: CandidateEval, roles: tuple[str, ...]) -> Scores:
    s, t, lat = raw_objectives(ev, roles)
    return Scores(round(s, 6), round(t, 3), round(lat, 3))


def _hypervolume(points: list[tuple[float, float, float]]) -> float:
    """The front's hypervolume against the FIXED reference point of genepool.core.hypervolume (the same
    number dbt's generation_front_stats computes), comparable across generations."""
    return front_hypervolume([(p[0], -p[1], -p[2]) for p in points])


def select_front(gen: Generation, results: ExperimentResults) -> Front:
    assert gen.items is not None
    prod_id = results.production_id
    evals = _evals(gen, results.frame, SCREEN)
    baseline = evals[prod_id]
    cap = gen.config.max_control_regressions
    ranked = rank_all(list(evals.values()), baseline, cap, SCREEN)
    front = pareto_front(list(evals.values()), baseline, cap, SCREEN)
    to_validate = [prod_id, *[ev.prompt_id for ev in front if ev.prompt_id != prod_id][: gen.config.validate_top]]
    val_items = stratified(split_items(gen.items, "validation"), gen.config.validation_items, gen.rng("validation"))
    rows: list[dict] = []
    with gen.step("validation") as meter:
        runner = meter.runner()
        for pid in to_validate:
            remaining = meter.tracker.remaining_rollouts
            if remaining is not None and remaining < len(val_items):
                break  # whole candidates only
            rec = gen.registry.get(pid)
            try:
                res = runner.run_candidate(rec.genome, val_items, "validation")  # one batch, cost checked first
            except BudgetExceeded:  # tokens or money ran out for this candidate: drop it whole, validate no more
                break
            rows += [result_row(gen.key, pid, "validation", r) for r in res]
        store.replace_results(gen.db, gen.key, VALIDATION, rows)
        val_evals = _evals(gen, pd.DataFrame(rows, columns=store.RESULT_COLUMNS), VALIDATION)
        survivors = per_instance_survivors(list(val_evals.values()), VALIDATION) if val_evals else set()
        front_ids = {ev.prompt_id for ev in front}
        members = tuple(
            FrontMember(
                prompt_id=r.eval.prompt_id, version=gen.registry.get(r.eval.prompt_id).version, rank=r.rank,
                on_front=r.eval.prompt_id in front_ids, survivor=r.eval.prompt_id in survivors, feasible=r.feasible,
                control_regressions=r.control_regressions, screen=_scores(r.eval, SCREEN),
                validation=_scores(val_evals[r.eval.prompt_id], VALIDATION) if r.eval.prompt_id in val_evals else None,
            )
            for r in ranked
            if r.eval.prompt_id in front_ids or r.eval.prompt_id in survivors
        )
        store.replace_front_members(gen.db, gen.key, [
            {"prompt_id": m.prompt_id, "rank": m.rank, "success_rate": m.best_known.success,
             "avg_tokens": m.best_known.avg_tokens, "avg_latency_ms": m.best_known.avg_latency_ms,
             "control_regressions": m.control_regressions, "feasible": m.feasible, "on_front": m.on_front,
             "survivor": m.survivor, "screen_success": m.screen.success}
            for m in members
        ])
    # the rows genepool.front_members holds (best known scores, feasible members): dbt computes the same number
    points = [(m.best_known.success, -m.best_known.avg_tokens, -m.best_known.avg_latency_ms)
              for m in members if m.feasible]
    return Front(
        partition_key=gen.key,
        production_id=prod_id,
        baseline_screen=_scores(baseline, SCREEN),
        baseline_validation=_scores(val_evals[prod_id], VALIDATION) if prod_id in val_evals else None,
        members=members,
        ranked=tuple(Ranked(r.eval.prompt_id, r.rank, r.feasible, r.control_regressions,
                            tuple(round(x, 6) for x in r.objectives)) for r in ranked),
        hypervolume=round(_hypervolume(points), 6),
        validation_items=len(val_items),
    )
