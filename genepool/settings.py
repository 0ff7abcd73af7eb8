"""The settings of one generation, declared once: the Dagster resource, ``GENEPOOL_OPTIMIZER`` and the
benchmarks all derive from this dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from genepool.core.budget import Budget


@dataclass(frozen=True)
class GenerationConfig:
    """Knobs of one generation. The defaults run generation 1 of the demo in a few minutes on 2 cores."""

    seed: int = 1234
    trace_items: int = 40  # train items the production prompt runs on to collect traces
    population_size: int = 8  # children bred per generation
    n_targets: int = 12  # regression set: items production failed ...
    n_controls: int = 8  # ... and items it passed (must not regress)
    validate_top: int = 3  # front members re-scored on the validation split
    max_parents: int = 4  # previous front members carried over as parents (besides production)
    validation_items: int = 30  # 0 = the whole validation split
    test_items: int = 0  # held-out test items for the final report (0 = all)
    report_test: bool = True
    max_rollouts: int = 600  # per generation, test report excluded
    max_tokens: int | None = None
    max_usd: float | None = None
    max_usd_per_day: float | None = None
    max_control_regressions: int = 0
    n_reflect: int = 0  # reflective (LLM) children per generation; needs a capable reflection model
    max_examples: int = 10  # few-shot turns a genome may hold (2 per task of the support-desk agent)
    examples_per_mine: int = 5  # examples one mining step adds (round-robin over the most failing tasks)
    min_improvement: float = 0.0  # a candidate must beat production on validation by more than this

    def budget(self) -> Budget:
        return Budget(max_rollouts=self.max_rollouts, max_tokens=self.max_tokens, max_usd=self.max_usd)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
