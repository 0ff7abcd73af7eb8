"""Plots in asset metadata: real PNGs (matplotlib, Agg) embedded as base64 markdown; the history plot
reads one agent's generations only, in generation order (never mixing agents)."""

from __future__ import annotations

import base64
import io
import re

import matplotlib.image as mpimg

from assets.plots import agent_history, agent_history_plot, pareto_figure, png_markdown
from genepool.core.genome import Genome
from genepool.registry import PromptRegistry


def _png(md: str):
    m = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert m, md[:80]
    raw = base64.b64decode(m.group(1))
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(io.BytesIO(raw), format="png")


def test_pareto_png():
    points = [
        {"success": 0.4, "tokens": 120.0, "label": "v1", "on_front": False, "feasible": True, "production": True},
        {"success": 0.7, "tokens": 150.0, "label": "v2", "on_front": True, "feasible": True, "production": False},
        {"success": 0.5, "tokens": 60.0, "label": "v3", "on_front": True, "feasible": True, "production": False},
        {"success": 0.9, "tokens": 90.0, "label": "v4", "on_front": True, "feasible": False, "production": False},
        {"success": 0.2, "tokens": 200.0, "label": "v5", "on_front": False, "feasible": True, "production": False},
    ]
    img = _png(png_markdown(pareto_figure(points, "support-desk/g0001"), "front").value)
    h, w = img.shape[:2]
    assert 200 < h < 600 and 300 < w < 800


def test_history_is_per_agent_in_generation_order(db):
    reg = PromptRegistry(db)
    # inserted out of order and interleaved with another agent, as partitions are in practice
    for agent, gen, success, tokens in [("support-desk", 2, 0.6, 80.0), ("critic", 1, 0.9, 10.0),
                                        ("support-desk", 1, 0.4, 120.0), ("support-desk", 3, 0.7, 70.0)]:
        key = f"{agent}/g{gen:04d}"
        db.execute("INSERT INTO genepool.experiments (id, agent_type, generation, seed) VALUES (%s,%s,%s,1)",
                   (key, agent, gen))
        rec = reg.register(agent, Genome(role=f"You are {agent} {gen}."))
        db.execute("INSERT INTO genepool.front_members (experiment_id, prompt_id, rank, success_rate, avg_tokens,"
                   " avg_latency_ms, control_regressions, feasible) VALUES (%s,%s,0,%s,%s,10,0,true)",
                   (key, rec.id, success, tokens))
    rows = agent_history(db, "support-desk")
    assert [(r["generation"], r["best_success"], r["min_tokens"]) for r in rows] == [
        (1, 0.4, 120.0), (2, 0.6, 80.0), (3, 0.7, 70.0)]
    _png(agent_history_plot(db, "support-desk").value)
