"""Statistics for the side-by-side comparison: intervals over test items and paired tests between arms.

Every arm is scored on the same held-out test items, so arms are compared *paired*, item by item:

- ``bootstrap_ci(outcomes)``: 95% percentile bootstrap interval of the success rate over items
  (deterministic: the resampling RNG is seeded);
- ``mcnemar_exact(a, b)``: two-sided exact McNemar test on the discordant pairs (items one arm solves
  and the other does not); the p-value is the binomial tail with p = 1/2, doubled, capped at 1;
- ``paired_bootstrap_diff(a, b)``: interval of the difference of success rates, resampling items.

The same functions (pure Python, no numpy) are used by ``benchmarks/compare.py`` for every result.
The library's own promotion gate uses ``genepool.core.significance`` (it may not import benchmarks).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 20261130


def _as_bits(outcomes: Sequence[bool | int], name: str) -> list[int]:
    bits = []
    for i, x in enumerate(outcomes):
        if x not in (0, 1, True, False):
            raise ValueError(f"{name}[{i}]={x!r}: outcomes must be 0/1 or booleans (one per test item)")
        bits.append(int(x))
    if not bits:
        raise ValueError(f"{name} is empty; pass one outcome per test item")
    return bits


def success_rate(outcomes: Sequence[bool | int]) -> float:
    bits = _as_bits(outcomes, "outcomes")
    return sum(bits) / len(bits)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of an already sorted list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_ci(
    outcomes: Sequence[bool | int],
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the success rate, resampling items with replacement."""
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be between 0 and 1 (e.g. 0.95)")
    bits = _as_bits(outcomes, "outcomes")
    n = len(bits)
    rng = random.Random(seed)
    means = sorted(sum(bits[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    alpha = (1 - level) / 2
    return round(_percentile(means, alpha), 4), round(_percentile(means, 1 - alpha), 4)


def discordant(a: Sequence[bool | int], b: Sequence[bool | int]) -> tuple[int, int]:
    """(items only ``a`` solves, items only ``b`` solves) for paired outcomes on the same items."""
    xa, xb = _as_bits(a, "a"), _as_bits(b, "b")
    if len(xa) != len(xb):
        raise ValueError(f"paired outcomes need the same items: a has {len(xa)}, b has {len(xb)}")
    only_a = sum(1 for x, y in zip(xa, xb, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(xa, xb, strict=True) if y and not x)
    return only_a, only_b


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial, p = 1/2)."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_exact(a: Sequence[bool | int], b: Sequence[bool | int]) -> float:
    return mcnemar_exact_p(*discordant(a, b))


def paired_bootstrap_diff(
    a: Sequence[bool | int],
    b: Sequence[bool | int],
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float, float]:
    """(observed difference a - b, lower, upper) of success rates, resampling items jointly."""
    xa, xb = _as_bits(a, "a"), _as_bits(b, "b")
    if len(xa) != len(xb):
        raise ValueError(f"paired outcomes need the same items: a has {len(xa)}, b has {len(xb)}")
    n = len(xa)
    d = [x - y for x, y in zip(xa, xb, strict=True)]
    rng = random.Random(seed)
    diffs = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    alpha = (1 - level) / 2
    return round(sum(d) / n, 4), round(_percentile(diffs, alpha), 4), round(_percentile(diffs, 1 - alpha), 4)


def summarize(outcomes: Sequence[bool | int], reference: Sequence[bool | int] | None = None) -> dict:
    """Everything the report prints for one result: n, rate, 95% CI, and the paired test vs ``reference``."""
    bits = _as_bits(outcomes, "outcomes")
    out: dict = {"n": len(bits), "success_rate": round(sum(bits) / len(bits), 4), "ci95": list(bootstrap_ci(bits))}
    if reference is not None:
        only_a, only_b = discordant(bits, reference)
        diff, lo, hi = paired_bootstrap_diff(bits, reference)
        out.update(
            paired_p=float(f"{mcnemar_exact_p(only_a, only_b):.4g}"),  # 4 significant digits, tiny p kept
            discordant={"only_this": only_a, "only_reference": only_b},
            diff=diff,
            diff_ci95=[lo, hi],
        )
    return out
