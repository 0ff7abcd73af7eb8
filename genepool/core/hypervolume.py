"""THE hypervolume of a Pareto front, one definition shared by Python and dbt.

Objectives: success rate (maximise), average tokens per item (minimise), average latency in ms
(minimise). Fixed reference point: success 0, ``TOKENS_CAP`` tokens, ``LATENCY_CAP_MS`` ms; ideal
corner: success 1, 0 tokens, 0 ms. Each axis is scaled to [0, 1] (a value beyond its cap counts as the
cap), and the hypervolume is the fraction of that box the front dominates, in [0, 1]. Because the box
is fixed, numbers are comparable from one generation to the next and between agents.

dbt_metrics/models/generation_front_stats.sql computes the same number (vars ``hypervolume_tokens_cap``
and ``hypervolume_latency_cap_ms`` default to these constants); tests/test_hypervolume.py checks they agree.
"""

from __future__ import annotations

from collections.abc import Iterable

from genepool.core.selection import hypervolume

TOKENS_CAP = 2000.0
LATENCY_CAP_MS = 10000.0


def front_hypervolume(members: Iterable[tuple[float, float, float]], *, tokens_cap: float = TOKENS_CAP,
                      latency_cap_ms: float = LATENCY_CAP_MS) -> float:
    """``members``: (success_rate, avg_tokens, avg_latency_ms) of the feasible front members."""
    points = [(float(s), -float(t), -float(lat)) for s, t, lat in members]
    if not points:
        return 0.0
    return float(hypervolume(points, ref=(0.0, -tokens_cap, -latency_cap_ms), ideal=(1.0, 0.0, 0.0)))
