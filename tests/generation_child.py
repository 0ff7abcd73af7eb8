"""Subprocess entry point of the kill/resume test (tests/test_kill_resume.py): one whole generation through
``genepool.steps.run_generation`` on the database at argv[1], with the ``RuleFollowingFakeModel`` TEST DOUBLE
(tests/doubles.py), each uncached call slowed by argv[4] seconds so the test can SIGKILL it mid-experiments.

    python tests/generation_child.py DATABASE_URL AGENT_TYPE GENERATION DELAY_S
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from doubles import RuleFollowingFakeModel

from genepool.db import Database, DatabaseUnavailable
from genepool.llm import LLMClient
from genepool.settings import GenerationConfig
from genepool.steps import Generation, run_generation

CONFIG = GenerationConfig(seed=1234, trace_items=15, population_size=6, n_targets=6, n_controls=4, validate_top=2,
                          validation_items=10, test_items=5, max_rollouts=200)


class SlowRuleFollowingFakeModel(RuleFollowingFakeModel):
    """TEST DOUBLE: RuleFollowingFakeModel (same provider and model names, so the same cache keys and
    fingerprint) that sleeps before each answer."""

    def __init__(self, delay_s: float):
        super().__init__()
        self.delay_s = delay_s

    def complete(self, messages, params):
        time.sleep(self.delay_s)
        return super().complete(messages, params)


def main(argv: list[str]) -> int:
    url, agent, generation, delay = argv[1], argv[2], int(argv[3]), float(argv[4])
    model = SlowRuleFollowingFakeModel(delay)
    db = Database(url)
    out = run_generation(Generation(db, LLMClient(model, db), agent, generation, CONFIG))
    print(json.dumps({"partition_key": out.front.partition_key, "model_calls": model.calls,
                      "promoted": [p.prompt_id for p in out.promotion.promoted]}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except DatabaseUnavailable as exc:  # as `genepool run` reports it: one line (server redacted, the fix)
        print(f"genepool: {exc}", file=sys.stderr)
        sys.exit(2)
