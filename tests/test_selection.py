import random

import pytest

from genepool.core.genome import Genome
from genepool.core.selection import (
    control_regressions,
    hypervolume,
    nsga2_select,
    objectives,
    pareto_front,
    per_instance_survivors,
    rank_all,
)
from genepool.core.types import CandidateEval, ItemOutcome


def ev(pid, successes, tokens=10, latency=100.0, controls=()):
    """successes: validation outcomes v0..vn; controls: control outcomes c0..cn."""
    results = {f"v{i}": ItemOutcome(bool(s), tokens, latency, "validation") for i, s in enumerate(successes)}
    results.update({f"c{i}": ItemOutcome(bool(s), tokens, latency, "control") for i, s in enumerate(controls)})
    return CandidateEval(pid, Genome(role=f"Role {pid}."), results)


BASE = ev("base", [1, 0, 0, 0], controls=[1, 1, 0])


def test_objectives_and_missing_roles():
    e = ev("a", [1, 1, 0, 0], tokens=12, latency=50, controls=[0, 0])
    assert objectives(e) == (0.5, -12.0, -50.0)
    assert objectives(e, roles=("control",)) == (0.0, -12.0, -50.0)
    with pytest.raises(ValueError, match="role"):
        objectives(e, roles=("target",))


def test_control_regressions_count_only_controls_the_baseline_passed():
    assert control_regressions(ev("x", [0], controls=[1, 1, 1]), BASE) == 0
    assert control_regressions(ev("x", [0], controls=[0, 1, 0]), BASE) == 1
    assert control_regressions(ev("x", [0], controls=[0, 0, 1]), BASE) == 2
    assert control_regressions(ev("x", [0]), BASE) == 2  # not run on the controls: counted
    assert control_regressions(ev("x", [0], controls=[0, 0, 0]), None) == 0


def test_nsga2_ranking_on_a_known_set():
    evals = [
        ev("best", [1, 1, 1, 0], tokens=20, controls=[1, 1]),  # front 0 (top success)
        ev("cheap", [1, 0, 0, 0], tokens=5, controls=[1, 1]),  # front 0 (fewest tokens)
        ev("middle", [1, 1, 0, 0], tokens=10, controls=[1, 1]),  # front 0 (trade-off)
        ev("dominated", [1, 0, 0, 0], tokens=30, controls=[1, 1]),  # dominated by cheap and middle
        ev("worst", [0, 0, 0, 0], tokens=40, controls=[1, 1]),  # dominated by everything
    ]
    ranks = {r.eval.prompt_id: r.rank for r in rank_all(evals, BASE)}
    assert ranks == {"best": 0, "cheap": 0, "middle": 0, "dominated": 1, "worst": 2}
    assert [e.prompt_id for e in pareto_front(evals, BASE)] == ["best", "middle", "cheap"]
    picked = [e.prompt_id for e in nsga2_select(evals, 4, BASE)]
    assert set(picked[:3]) == {"best", "cheap", "middle"} and picked[3] == "dominated"
    # deterministic regardless of input order
    shuffled = evals[:]
    random.Random(3).shuffle(shuffled)
    assert [e.prompt_id for e in nsga2_select(shuffled, 4, BASE)] == picked


def test_control_regression_makes_a_better_candidate_infeasible():
    good_but_regresses = ev("greedy", [1, 1, 1, 1], tokens=5, controls=[0, 1])  # best on everything, 1 regression
    safe = ev("safe", [1, 1, 0, 0], tokens=10, controls=[1, 1])
    weak = ev("weak", [1, 0, 0, 0], tokens=20, controls=[1, 1])
    evals = [good_but_regresses, safe, weak]
    assert [e.prompt_id for e in pareto_front(evals, BASE)] == ["safe"]
    assert [e.prompt_id for e in nsga2_select(evals, 2, BASE)] == ["safe", "weak"]
    assert [e.prompt_id for e in nsga2_select(evals, 3, BASE)][-1] == "greedy"  # only to fill the last slot
    ranked = {r.eval.prompt_id: r for r in rank_all(evals, BASE)}
    assert not ranked["greedy"].feasible and ranked["greedy"].rank > ranked["weak"].rank
    # allowing one regression makes it feasible and it dominates
    assert [e.prompt_id for e in pareto_front(evals, BASE, max_control_regressions=1)] == ["greedy"]
    assert nsga2_select(evals, 1, BASE, max_control_regressions=1)[0].prompt_id == "greedy"


def test_per_instance_survivor_kept_despite_lower_average():
    evals = [
        ev("avg", [1, 1, 1, 0, 0], controls=[1, 1]),  # 60%
        ev("niche", [0, 0, 0, 1, 0], controls=[1, 1]),  # 20% but the only one solving v3
        ev("subset", [1, 1, 0, 0, 0], controls=[1, 1]),  # wins are a subset of avg's
        ev("same", [1, 1, 1, 0, 0], tokens=20, controls=[1, 1]),  # same wins as avg, worse tokens
    ]
    assert per_instance_survivors(evals) == {"avg", "niche"}
    # per_instance_survivors does not judge feasibility: the front step ranks (and drops) infeasible ones
    evals.append(ev("niche2", [0, 0, 0, 0, 1], controls=[0, 0]))
    assert "niche2" in per_instance_survivors(evals)


def test_hypervolume_exact_and_normalised():
    assert hypervolume([(1, 1, 1)], (0, 0, 0)) == pytest.approx(1.0)
    assert hypervolume([(1, 1, 1), (2, 0.5, 0.5)], (0, 0, 0)) == pytest.approx(1.25)
    assert hypervolume([(1, 1, 1), (0.5, 0.5, 0.5)], (0, 0, 0)) == pytest.approx(1.0)  # dominated adds nothing
    assert hypervolume([(-1, 1, 1)], (0, 0, 0)) == 0.0
    assert hypervolume([(0.5, -10, -100)], (0, -100, -1000), ideal=(1, 0, 0)) == pytest.approx(0.5 * 0.9 * 0.9)
    # matches inclusion-exclusion on random points
    rng = random.Random(11)
    pts = [tuple(rng.random() for _ in range(3)) for _ in range(3)]

    def box(ps):
        return min(p[0] for p in ps) * min(p[1] for p in ps) * min(p[2] for p in ps)

    a, b, c = pts
    expected = box([a]) + box([b]) + box([c]) - box([a, b]) - box([a, c]) - box([b, c]) + box([a, b, c])
    assert hypervolume(pts, (0, 0, 0)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="ideal"):
        hypervolume(pts, (0, 0, 0), ideal=(1, 0, 1))
