"""Selection must not depend on machine load: measured latency never changes the front or its order."""

from __future__ import annotations

from genepool.core.genome import Genome
from genepool.core.selection import pareto_front, rank_all, selection_objectives
from genepool.core.types import CandidateEval, ItemOutcome


def ev(pid: str, successes: list[int], tokens: int, latency: float) -> CandidateEval:
    results = {f"v{i}": ItemOutcome(bool(s), tokens, latency, "validation") for i, s in enumerate(successes)}
    return CandidateEval(pid, Genome(role=pid), results)


def test_front_and_order_ignore_measured_latency():
    def run(lat_a: float, lat_b: float, lat_c: float):
        evals = [ev("a", [1, 1, 0], 100, lat_a), ev("b", [1, 1, 0], 60, lat_b), ev("c", [1, 0, 0], 60, lat_c)]
        return ([e.prompt_id for e in pareto_front(evals)], [(r.eval.prompt_id, r.rank) for r in rank_all(evals)])

    quiet = run(100.0, 100.0, 100.0)
    loaded = run(90.0, 900.0, 50.0)  # b measured 9x slower on a loaded machine
    assert quiet == loaded
    # b (same success as a, fewer tokens) dominates a; c solves less
    assert quiet[0] == ["b"]
    assert selection_objectives(ev("x", [1, 0], 10, 12345.0)) == (0.5, -10.0, -40.0)
