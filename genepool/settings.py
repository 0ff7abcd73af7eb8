"""The settings of one generation, declared once: the Dagster resource, ``GENEPOOL_OPTIMIZER`` and the
benchmarks all derive from this dataclass. Every value is validated when the config is made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

from genepool.core.budget import Budget
from genepool.validation import MAX_EXAMPLES


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
    max_rollouts: int = 600  # per generation, test report excluded (model calls, reflection included)
    max_report_rollouts: int = 400  # the held-out test report's own cap (production + the best candidate)
    max_tokens: int | None = None  # per generation, every call (report and reflection included)
    max_usd: float | None = None  # per generation, every uncached call of every attempt
    max_usd_per_day: float | None = None  # every genepool LLM call of the day, across concurrent runs
    max_control_regressions: int = 0
    n_reflect: int = 0  # reflective (LLM) children per generation; needs a capable reflection model
    max_examples: int = 10  # few-shot turns a genome may hold (2 per task of the support-desk agent)
    # examples a nearest-example pool may hold; a request shows only its example_select nearest the input
    example_pool_size: int = 96
    examples_per_mine: int = 5  # examples one mining step adds (round-robin over the most failing tasks)
    min_improvement: float = 0.0  # a candidate must beat production on validation by more than this
    # significance gate: a child becomes `candidate` only when the one-sided lower confidence bound (this level)
    # of its paired validation gain over production exceeds min_improvement; 0 = compare plain means
    promotion_confidence: float = 0.9

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            if v is None and "None" in kind:
                continue
            if kind == "bool":
                if not isinstance(v, bool):
                    raise ValueError(f"GenerationConfig.{f.name}={v!r} must be true or false")
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"GenerationConfig.{f.name}={v!r} must be a number")
            if kind.startswith("int") and not isinstance(v, int):
                raise ValueError(f"GenerationConfig.{f.name}={v!r} must be a whole number")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"GenerationConfig.{f.name}={v!r} must be a finite number (no NaN or infinity)")
            if v < 0 and f.name != "seed":
                raise ValueError(f"GenerationConfig.{f.name}={v!r} must be >= 0")
        if self.promotion_confidence >= 1:
            raise ValueError(f"GenerationConfig.promotion_confidence={self.promotion_confidence!r} must be below 1 "
                             "(e.g. 0.9; 0 turns the significance gate off)")
        if self.example_pool_size > MAX_EXAMPLES or self.max_examples > MAX_EXAMPLES:
            raise ValueError(f"GenerationConfig.example_pool_size={self.example_pool_size} and max_examples="
                             f"{self.max_examples} must be at most {MAX_EXAMPLES} (the genome's limit)")
        if self.min_improvement >= 1:
            raise ValueError(f"GenerationConfig.min_improvement={self.min_improvement!r} must be below 1 (a rate)")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_overrides(cls, overrides: Any, source: str = "GENEPOOL_OPTIMIZER") -> GenerationConfig:
        """A config from a JSON-like mapping; an unknown key is refused with the list of valid keys."""
        if not isinstance(overrides, dict):
            raise ValueError(f"{source} must be a JSON object, e.g. {{\"population_size\": 12}}; got {overrides!r}")
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{source} has unknown keys {unknown}; valid keys: {', '.join(cls.field_names())}")
        return cls(**overrides)

    def budget(self, max_rollouts: int | None = None) -> Budget:
        return Budget(max_rollouts=self.max_rollouts if max_rollouts is None else max_rollouts,
                      max_tokens=self.max_tokens, max_usd=self.max_usd)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
