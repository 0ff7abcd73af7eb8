"""Paired significance for promotion: does a candidate beat production on the same validation items?

``paired_lower_bound(candidate, production, level)`` is a one-sided lower confidence bound of the
difference of success rates (candidate - production) on items both were run on. It uses the exact
(Clopper-Pearson) bound on the share of discordant items the candidate wins, converted to a
difference: with d discordant items out of n, of which w are won by the candidate,
diff = (2 * share_won - 1) * d / n. The bound is conservative and deterministic (no resampling), so
the same outcomes give the same decision on every machine.

``level=0`` switches the gate off (the bound is then the observed difference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def _binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def clopper_pearson_lower(successes: int, n: int, level: float) -> float:
    """One-sided exact lower bound of a binomial proportion at confidence ``level``."""
    if n <= 0 or successes <= 0:
        return 0.0
    if successes > n:
        raise ValueError(f"successes={successes} > n={n}")
    alpha = 1 - level
    lo, hi = 0.0, successes / n
    for _ in range(60):  # bisection on P(X >= successes | p) = alpha
        mid = (lo + hi) / 2
        if 1 - _binom_cdf(successes - 1, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def paired_lower_bound(candidate: Mapping[str, bool], production: Mapping[str, bool], level: float = 0.9) -> float:
    """Lower confidence bound of success(candidate) - success(production) on their common items."""
    if not 0 <= level < 1:
        raise ValueError(f"level={level} must be in [0, 1); 0 turns the significance gate off")
    common = sorted(set(candidate) & set(production))
    if not common:
        raise ValueError("candidate and production share no validation item; validate both on the same items")
    n = len(common)
    won = sum(1 for i in common if candidate[i] and not production[i])
    lost = sum(1 for i in common if production[i] and not candidate[i])
    d = won + lost
    if level == 0:
        return (won - lost) / n
    if d == 0:
        return 0.0
    share = clopper_pearson_lower(won, d, level)
    return (2 * share - 1) * d / n
