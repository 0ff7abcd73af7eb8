"""Step 6, promotion: front members that beat production on validation with no control regression become
``candidate``; a person approves one to production (``genepool approve``). The held-out test split is
only reported here (own rollout cap ``max_report_rollouts``; tokens and USD count against the
generation's caps), never used for selection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from genepool import store
from genepool.core.benchmark import split_items
from genepool.core.budget import BudgetExceeded
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

    @property
    def best(self) -> FrontMember | None:
        return self.promoted[0] if self.promoted else None


def _beats(gen: Generation, m: FrontMember, front: Front) -> bool:
    base = front.baseline_validation
    return (base is not None and m.on_front and m.prompt_id != front.production_id and m.validation is not None
            and m.control_regressions == 0 and m.validation.success > base.success + gen.config.min_improvement)


def promote(gen: Generation, front: Front) -> Promotion:
    assert gen.items is not None
    base = front.baseline_validation
    promoted = sorted((m for m in front.members if _beats(gen, m, front)),
                      key=lambda m: (-m.validation.success, m.validation.avg_tokens, m.prompt_id))  # type: ignore[union-attr]
    test: dict[str, TestScore] = {}
    skipped: list[str] = []
    with gen.hold_lock("promotion"):
        gen.verify()
        for m in promoted:
            assert m.validation is not None and base is not None
            label_once(gen, m.prompt_id, "candidate",
                       f"beats production on validation in {gen.key}: {m.validation.success:.3f} vs "
                       f"{base.success:.3f}, no control regression",
                       {"experiment_id": gen.key, "validation": asdict(m.validation), "production": asdict(base)})
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
                        res = [runner.run_item(rec.genome, it, "test") for it in test_items]
                    except BudgetExceeded:
                        skipped.append(pid)
                        continue
                    rows += [result_row(gen.key, pid, "test", r) for r in res]
                    n = len(res) or 1
                    test[pid] = TestScore(round(sum(r.success for r in res) / n, 6),
                                          round(sum(r.tokens for r in res) / n, 3),
                                          round(sum(r.latency_ms for r in res) / n, 3), len(res))
                store.insert_results(gen.db, rows)
        store.mark_finished(gen.db, gen.key)
    return Promotion(gen.key, front.production_id, base, tuple(promoted), test, tuple(skipped))
