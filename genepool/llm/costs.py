"""USD prices per million tokens per model (``GENEPOOL_COST_TABLE``)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field


@dataclass
class CostTable:
    """USD per million tokens, per model name; unknown models and local models cost 0."""

    prices: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> CostTable:
        raw = os.environ.get("GENEPOOL_COST_TABLE")  # JSON: {"gpt-4o-mini": [0.15, 0.6]}
        if not raw:
            return cls({})
        try:
            table = json.loads(raw)
            prices = {str(k): (float(v[0]), float(v[1])) for k, v in table.items()}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(
                'GENEPOOL_COST_TABLE must be JSON like {"gpt-4o-mini": [0.15, 0.6]} (USD per million input and'
                f" output tokens): {exc}"
            ) from None
        for k, (a, b) in prices.items():
            if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0):
                raise ValueError(f"GENEPOOL_COST_TABLE[{k!r}] prices must be finite numbers >= 0")
        return cls(prices)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        p_in, p_out = self.prices.get(model, (0.0, 0.0))
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1_000_000
