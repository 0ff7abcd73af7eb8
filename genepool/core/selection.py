"""Multi-objective selection: NSGA-II with a control-regression constraint, Pareto front, GEPA-style survivors.

Objectives, all computed on the items of the given roles (default: validation):
success rate (maximise), average tokens per call (minimise), average latency (minimise).
``objectives()`` returns them in maximisation form ``(success_rate, -avg_tokens, -avg_latency)``;
the DEAP fitness holds ``(success_rate, avg_tokens, avg_latency)`` with weights ``(1, -1, -1)``,
which orders candidates identically.

Constraint: a candidate that fails more control items the baseline passed than
``max_control_regressions`` is infeasible. Infeasible candidates are never ranked ahead of feasible
ones (constraint domination) and never appear on the Pareto front.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deap import base, creator, tools

from genepool.core.types import CandidateEval, ItemOutcome

WEIGHTS = (1.0, -1.0, -1.0)
# Latency in selection is ESTIMATED from token counts at this fixed rate, never the measured wall time:
# measured latency depends on machine load, so it would make the front differ between runs and machines.
# Measured latency is still reported (``raw_objectives``/``objectives``); ranking uses ``selection_objectives``.
LATENCY_MS_PER_TOKEN = 4.0


def ensure_creator() -> None:
    """Create the DEAP classes once per process (DEAP needs them at import for pickling)."""
    if not hasattr(creator, "GenepoolFitness"):
        creator.create("GenepoolFitness", base.Fitness, weights=WEIGHTS)
    if not hasattr(creator, "GenepoolIndividual"):
        creator.create("GenepoolIndividual", list, fitness=creator.GenepoolFitness)


ensure_creator()


def _items(ev: CandidateEval, roles: Iterable[str]) -> list[ItemOutcome]:
    roles = tuple(roles)
    return [r for _, r in sorted(ev.results.items()) if r.role in roles]


def raw_objectives(ev: CandidateEval, roles: Iterable[str] = ("validation",)) -> tuple[float, float, float]:
    """(success_rate, avg_tokens, avg_latency_ms) on the items of ``roles``."""
    items = _items(ev, roles)
    if not items:
        have = sorted({r.role for r in ev.results.values()})
        raise ValueError(
            f"candidate {ev.prompt_id} has no results with role in {tuple(roles)} (it has roles {have}); "
            "evaluate it on those items or pass roles= that it has"
        )
    n = len(items)
    return (
        sum(r.success for r in items) / n,
        sum(r.tokens for r in items) / n,
        sum(r.latency_ms for r in items) / n,
    )


def objectives(ev: CandidateEval, roles: Iterable[str] = ("validation",)) -> tuple[float, float, float]:
    """(success_rate, -avg_tokens, -avg_latency): larger is better on every axis."""
    s, t, lat = raw_objectives(ev, roles)
    return (s, -t, -lat)


def selection_objectives(ev: CandidateEval, roles: Iterable[str] = ("validation",)) -> tuple[float, float, float]:
    """What ranking uses: (success_rate, -avg_tokens, -estimated_latency); same data gives the same order anywhere."""
    s, t, _ = raw_objectives(ev, roles)
    return (s, -t, -t * LATENCY_MS_PER_TOKEN)


BaselineLike = CandidateEval | Mapping[str, ItemOutcome] | None


def _baseline_results(baseline: BaselineLike) -> Mapping[str, ItemOutcome]:
    if baseline is None:
        return {}
    if isinstance(baseline, CandidateEval):
        return baseline.results
    return baseline


def control_regressions(candidate: CandidateEval, baseline: BaselineLike) -> int:
    """Control items the baseline passed that the candidate fails (an item it was not run on counts too)."""
    count = 0
    for item_id, base_r in _baseline_results(baseline).items():
        if base_r.role != "control" or not base_r.success:
            continue
        mine = candidate.results.get(item_id)
        if mine is None or not mine.success:
            count += 1
    return count


@dataclass(frozen=True)
class Ranked:
    """A candidate with its objectives, constraint status and rank (0 = first front)."""

    eval: CandidateEval
    objectives: tuple[float, float, float]
    control_regressions: int
    feasible: bool
    rank: int


def _unique_sorted(evals: Sequence[CandidateEval]) -> list[CandidateEval]:
    seen: dict[str, CandidateEval] = {}
    for ev in evals:
        seen.setdefault(ev.prompt_id, ev)
    return [seen[k] for k in sorted(seen)]


def _individuals(evals: Sequence[CandidateEval], roles) -> list:
    inds = []
    for ev in evals:
        ind = creator.GenepoolIndividual([ev.prompt_id])
        s, t, _ = raw_objectives(ev, roles)
        ind.fitness.values = (s, t, t * LATENCY_MS_PER_TOKEN)  # estimated latency: load-independent
        ind.eval = ev
        inds.append(ind)
    return inds


def _ranks(inds: list) -> dict[str, int]:
    fronts = tools.sortNondominated(inds, len(inds))
    return {ind.eval.prompt_id: r for r, front in enumerate(fronts) for ind in front}


def rank_all(
    evals: Sequence[CandidateEval],
    baseline: BaselineLike = None,
    max_control_regressions: int = 0,
    roles: Iterable[str] = ("validation",),
) -> list[Ranked]:
    """Every candidate with objectives, feasibility and non-domination rank (infeasible ranks follow feasible)."""
    roles = tuple(roles)
    evals = _unique_sorted(evals)
    regress = {ev.prompt_id: control_regressions(ev, baseline) for ev in evals}
    feasible = [ev for ev in evals if regress[ev.prompt_id] <= max_control_regressions]
    infeasible = [ev for ev in evals if regress[ev.prompt_id] > max_control_regressions]
    ranks = _ranks(_individuals(feasible, roles)) if feasible else {}
    offset = max(ranks.values(), default=-1) + 1
    # infeasible: ordered by how many regressions, then by non-domination among equals
    by_count: dict[int, list[CandidateEval]] = {}
    for ev in infeasible:
        by_count.setdefault(regress[ev.prompt_id], []).append(ev)
    for count in sorted(by_count):
        sub = _ranks(_individuals(by_count[count], roles))
        for pid, r in sub.items():
            ranks[pid] = offset + r
        offset += max(sub.values()) + 1
    out = [
        Ranked(ev, objectives(ev, roles), regress[ev.prompt_id], regress[ev.prompt_id] <= max_control_regressions,
               ranks[ev.prompt_id])
        for ev in evals
    ]
    return sorted(out, key=lambda r: (r.rank, tuple(-x for x in selection_objectives(r.eval, roles)),
                                      r.eval.prompt_id))


def nsga2_select(
    evals: Sequence[CandidateEval],
    k: int,
    baseline: BaselineLike = None,
    max_control_regressions: int = 0,
    roles: Iterable[str] = ("validation",),
) -> list[CandidateEval]:
    """Select ``k`` candidates with DEAP's NSGA-II; feasible ones always first (constraint domination).

    Feasible candidates go through ``tools.selNSGA2``; if fewer than ``k`` are feasible, the rest is
    filled with infeasible ones, fewest control regressions first (NSGA-II among equal counts).
    The order is deterministic (inputs are sorted by prompt id before DEAP sees them).
    """
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    roles = tuple(roles)
    evals = _unique_sorted(evals)
    regress = {ev.prompt_id: control_regressions(ev, baseline) for ev in evals}
    groups: dict[int, list[CandidateEval]] = {}
    for ev in evals:
        r = regress[ev.prompt_id]
        groups.setdefault(0 if r <= max_control_regressions else r, []).append(ev)
    chosen: list[CandidateEval] = []
    for key in sorted(groups):
        room = k - len(chosen)
        if room <= 0:
            break
        inds = _individuals(groups[key], roles)
        picked = tools.selNSGA2(inds, min(room, len(inds)))
        chosen.extend(ind.eval for ind in picked)
    return chosen


def pareto_front(
    evals: Sequence[CandidateEval],
    baseline: BaselineLike = None,
    max_control_regressions: int = 0,
    roles: Iterable[str] = ("validation",),
) -> list[CandidateEval]:
    """The first non-dominated front of the feasible candidates, best success first (deterministic)."""
    roles = tuple(roles)
    feasible = [
        ev for ev in _unique_sorted(evals) if control_regressions(ev, baseline) <= max_control_regressions
    ]
    if not feasible:
        return []
    front = tools.sortNondominated(_individuals(feasible, roles), len(feasible), first_front_only=True)[0]
    evs = [ind.eval for ind in front]
    return sorted(evs, key=lambda ev: (tuple(-x for x in selection_objectives(ev, roles)), ev.prompt_id))


def per_instance_survivors(
    evals: Sequence[CandidateEval],
    roles: Iterable[str] = ("validation",),
) -> set[str]:
    """GEPA's per-instance Pareto set: candidates that are best on some item survive.

    For each item some but not all candidates solve, the solvers are "best on that item". A candidate
    whose set of such items is contained in another's is dropped (strict subset; on equal sets the one
    with better objectives, then the smaller prompt id, is kept), so each survivor brings an item no
    other survivor covers at least as well.
    """
    roles = tuple(roles)
    evals = _unique_sorted(evals)
    if not evals:
        return set()
    item_ids = sorted({i for ev in evals for i, r in ev.results.items() if r.role in roles})
    wins: dict[str, frozenset[str]] = {ev.prompt_id: frozenset() for ev in evals}
    for item in item_ids:
        solvers = [
            ev.prompt_id for ev in evals if (r := ev.results.get(item)) is not None and r.role in roles and r.success
        ]
        if 0 < len(solvers) < len(evals):
            for pid in solvers:
                wins[pid] = wins[pid] | {item}
    score = {ev.prompt_id: selection_objectives(ev, roles) for ev in evals}
    order = sorted(wins, key=lambda p: (tuple(-x for x in score[p]), p))
    survivors: list[str] = []
    for pid in order:
        mine = wins[pid]
        if not mine:
            continue
        dominated = any(
            (mine < wins[other]) or (mine == wins[other] and other in survivors) for other in order if other != pid
        )
        if not dominated:
            survivors.append(pid)
    return set(survivors)


def hypervolume(
    points: Sequence[Sequence[float]],
    ref: Sequence[float],
    ideal: Sequence[float] | None = None,
) -> float:
    """Exact hypervolume of 3-objective points, all objectives MAXIMISED (as ``objectives()`` returns).

    ``ref`` is the worst corner (e.g. ``(0.0, -max_tokens, -max_latency)``); points not strictly
    better than ``ref`` on every axis add nothing. With ``ideal`` (the best corner) each axis is
    scaled to [0, 1] and the result is the dominated fraction of the box, in [0, 1].
    Computed by slicing along the first axis and sweeping the second: deterministic, O(n^2 log n).
    """
    if len(ref) != 3:
        raise ValueError(f"ref must have 3 values, got {len(ref)}")
    scale = [1.0, 1.0, 1.0]
    if ideal is not None:
        if len(ideal) != 3 or any(i <= r for i, r in zip(ideal, ref, strict=True)):
            raise ValueError(f"ideal={tuple(ideal)} must be strictly better than ref={tuple(ref)} on all 3 axes")
        scale = [i - r for i, r in zip(ideal, ref, strict=True)]
    boxes = []
    for p in points:
        if len(p) != 3:
            raise ValueError(f"every point needs 3 objectives, got {tuple(p)}")
        d = [min((p[i] - ref[i]) / scale[i], 1.0 if ideal is not None else float("inf")) for i in range(3)]
        if all(x > 0 for x in d):
            boxes.append(tuple(d))
    boxes = sorted(set(boxes), key=lambda b: (-b[0], -b[1], -b[2]))
    total = 0.0
    for i, b in enumerate(boxes):
        next_x = boxes[i + 1][0] if i + 1 < len(boxes) else 0.0
        width = b[0] - next_x
        if width <= 0:
            continue
        total += width * _area_2d([(q[1], q[2]) for q in boxes[: i + 1]])
    return total


def _area_2d(points: list[tuple[float, float]]) -> float:
    """Area of the union of rectangles [0, y] x [0, z]."""
    area = 0.0
    best_z = 0.0
    # sweep y descending; the dominated area gains (y_i - y_{i+1}) * max z so far
    pts = sorted(points, key=lambda p: -p[0])
    for i, (y, z) in enumerate(pts):
        best_z = max(best_z, z)
        next_y = pts[i + 1][0] if i + 1 < len(pts) else 0.0
        area += (y - next_y) * best_z
    return area
