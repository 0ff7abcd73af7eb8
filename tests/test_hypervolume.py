"""One hypervolume definition: Python (genepool/core/hypervolume.py) and the dbt model
generation_front_stats agree on a fixture of fronts, including points beyond the caps and infeasible ones."""

from __future__ import annotations

import random

import pytest

from genepool.core.genome import Genome
from genepool.core.hypervolume import LATENCY_CAP_MS, TOKENS_CAP, front_hypervolume
from genepool.db import Database
from genepool.registry import PromptRegistry
from resources.dbt import dbt_resource

AGENT = "support-desk"


def test_fixed_reference_point_values():
    assert front_hypervolume([]) == 0.0
    assert front_hypervolume([(1.0, 0.0, 0.0)]) == pytest.approx(1.0)
    assert front_hypervolume([(0.5, TOKENS_CAP / 2, LATENCY_CAP_MS / 2)]) == pytest.approx(0.125)
    # union of two boxes: 0.125 + 0.25 - overlap 0.0625
    assert front_hypervolume([(0.5, 1000.0, 5000.0), (0.25, 0.0, 0.0)]) == pytest.approx(0.3125)
    # beyond a cap adds nothing; success 0 adds nothing
    assert front_hypervolume([(0.9, TOKENS_CAP + 1, 10.0), (0.0, 1.0, 1.0)]) == 0.0
    # fixed box: adding a worse point elsewhere never changes another front's number
    assert front_hypervolume([(0.5, 1000.0, 5000.0), (0.1, 1900.0, 9000.0)]) == pytest.approx(0.125)


def test_python_and_dbt_agree(db: Database):
    reg = PromptRegistry(db)
    rng = random.Random(7)
    fronts: dict[str, list[tuple[float, float, float, bool]]] = {}
    for g in (1, 2, 3):
        key = f"{AGENT}/g{g:04d}"
        db.execute("INSERT INTO genepool.experiments (id, agent_type, generation, seed) VALUES (%s,%s,%s,1)",
                   (key, AGENT, g))
        members = []
        for i in range(7 if g < 3 else 1):
            tokens = rng.choice([rng.uniform(5, 1900), TOKENS_CAP * 1.5])
            members.append((round(rng.random(), 3), round(tokens, 2), round(rng.uniform(10, 12000), 1), i != 3))
        fronts[key] = members
        for i, (s, t, lat, feasible) in enumerate(members):
            rec = reg.register(AGENT, Genome(role=f"You are agent {g}-{i}."))
            db.execute(
                "INSERT INTO genepool.front_members (experiment_id, prompt_id, rank, success_rate, avg_tokens,"
                " avg_latency_ms, control_regressions, feasible) VALUES (%s,%s,0,%s,%s,%s,0,%s)",
                (key, rec.id, s, t, lat, feasible),
            )
    dbt_resource(db.url).cli(["run", "--select", "generation_front_stats"]).wait()
    rows = {r["experiment_id"]: r["hypervolume"]
            for r in db.fetchall("SELECT experiment_id, hypervolume FROM genepool_metrics.generation_front_stats")}
    for key, members in fronts.items():
        expected = front_hypervolume([(s, t, lat) for s, t, lat, ok in members if ok])
        assert rows[key] == pytest.approx(expected, abs=1e-9), key
    assert any(v > 0 for v in rows.values())
