"""Step 6, promotion: front members that beat production on validation with no control regression, by a
significant margin (the paired lower confidence bound of the gain at ``promotion_confidence`` is above
``min_improvement``; ``genepool.core.significance``), become ``candidate``; a person approves one to
production (``genepool approve``). The held-out test split is only reported here (own rollout cap
``max_report_rollouts``; tokens and USD count against the generation's caps), never used for selection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from genepool import store
from genepool.core.benchmark import split_items
from genepool.core.budget import BudgetExceeded
from genepool.core.significance import paired_lower_bound
from genepool.steps.context import Generation
from genepool.steps.experiments import label_once, result_row
from genepool.steps.front import Front, FrontMember, Scores
from genepool.steps.traces import stratified


@dataclass(frozen=True)
class TestScore:
    success: float
    avg_tokens: float
    avg_latency_ms: float
    items: int


@dataclass(frozen=True)
class Promotion:
    partition_key: str
    production_id: str
    production_validation: Scores | None
    promoted: tuple[FrontMember, ...]  # best validation success first
    test: Mapping[str, TestScore] = field(default_factory=dict)  # prompt id -> held-out score
    report_skipped: tuple[str, ...] = ()  # prompts the report's budget left out
    # significance gate: prompt id -> lower confidence bound of its paired validation gain over production,
    # for every front member with a higher mean; those whose bound is not above min_improvement are not promoted
    gate_level: float = 0.0
    lower_bounds: Mapping[str, float] = field(default_factory=dict)
    not_significant: tuple[str, ...] = ()

    @property
    def best(self) -> FrontMember | None:
        return self.promoted[0] if self.promoted else None


def _beats(gen: Generation, m: FrontMember, front: Front) -> bool:
    """Higher mean validation success than production, on the front, no control regression."""
    base = front.baseline_validation
    return (base is not None and m.on_front and m.prompt_id != front.production_id and m.validation is not None
            and m.control_regressions == 0 and m.validation.success > base.success + gen.config.min_improvement)


def _validation_outcomes(gen: Generation) -> dict[str, dict[str, bool]]:
    """prompt id -> {item id: success} on this generation's validation items."""
    out: dict[str, dict[str, bool]] = {}
    for r in gen.db.fetchall(
        "SELECT prompt_id, item_id, success FROM genepool.experiment_results"
        " WHERE experiment_id = %s AND role = 'validation'", (gen.key,),
    ):
        out.setdefault(r["prompt_id"], {})[r["item_id"]] = bool(r["success"])
    return out


def _significance(gen: Generation, front: Front, members: list[FrontMember]) -> dict[str, float]:
    """Paired lower confidence bound (``promotion_confidence``) of each member's gain over production."""
    outcomes = _validation_outcomes(gen)
    prod = outcomes.get(front.production_id, {})
    bounds = {}
    for m in members:
        mine = outcomes.get(m.prompt_id, {})
        if prod and mine and set(prod) & set(mine):
            bounds[m.prompt_id] = round(paired_lower_bound(mine, prod, gen.config.promotion_confidence), 6)
        else:
            bounds[m.prompt_id] = float("-inf")  # no paired evidence: never promoted
    return bounds


def promote(gen: Generation, front: Front) -> Promotion:
    assert gen.items is not None
    base = front.baseline_validation
    better = [m for m in front.members if _beats(gen, m, front)]
    bounds = _significance(gen, front, better)
    gate = gen.config.promotion_confidence
    promoted = sorted((m for m in better if bounds[m.prompt_id] > gen.config.min_improvement),
                      key=lambda m: (-m.validation.success, m.validation.avg_tokens, m.prompt_id))  # type: ignore[union-attr]
    not_significant = tuple(m.prompt_id for m in better if m not in promoted)
    test: dict[str, TestScore] = {}
    skipped: list[str] = []
    with gen.hold_lock("promotion"):
        gen.verify()
        for m in promoted:
            assert m.validation is not None and base is not None
            label_once(gen, m.prompt_id, "candidate",
                       f"beats production on validation in {gen.key}: {m.validation.success:.3f} vs "
                       f"{base.success:.3f}, paired lower bound of the gain {bounds[m.prompt_id]:+.3f} at "
                       f"{gate:.0%} confidence, no control regression",
                       {"experiment_id": gen.key, "validation": asdict(m.validation), "production": asdict(base),
                        "lower_bound": bounds[m.prompt_id], "confidence": gate})
        if gen.config.report_test:
            test_items = stratified(split_items(gen.items, "test"), gen.config.test_items, gen.rng("test"))
            with gen.step(store.REPORT_STEP) as meter:
                runner = meter.runner()
                rows: list[dict] = []
                for pid in [front.production_id] + [m.prompt_id for m in promoted[:1]]:
                    remaining = meter.tracker.remaining_rollouts
                    if remaining is not None and remaining < len(test_items):
                        skipped.append(pid)
                        continue
                    rec = gen.registry.get(pid)
                    try:
                        res = runner.run_candidate(rec.genome, test_items, "test")  # one batch, checked first
                    except BudgetExceeded:
                        skipped.append(pid)
                        continue
                    rows += [result_row(gen.key, pid, "test", r) for r in res]
                    n = len(res) or 1
                    test[pid] = TestScore(round(sum(r.success for r in res) / n, 6),
                                          round(sum(r.tokens for r in res) / n, 3),
                                          round(sum(r.latency_ms for r in res) / n, 3), len(res))
                store.replace_results(gen.db, gen.key, ("test",), rows)
        store.mark_finished(gen.db, gen.key)
    return Promotion(gen.key, front.production_id, base, tuple(promoted), test, tuple(skipped), gate,
                     {k: v for k, v in bounds.items() if v != float("-inf")}, not_significant)
