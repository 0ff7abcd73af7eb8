"""Plots for asset metadata: PNGs drawn with matplotlib (Agg, no display), embedded in markdown metadata
as base64 data URIs so the Dagster UI shows them on the asset's page.

- ``pareto_plot``: one generation's candidates, success vs tokens, the front and production marked;
- ``agent_history_plot``: one agent's best success and fewest tokens per generation (read from
  ``genepool.front_members``), so every plot is per agent, in generation order.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import dagster as dg
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the Agg backend


def png_markdown(fig: Any, alt: str) -> dg.MetadataValue:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def pareto_figure(points: Sequence[dict], title: str) -> Any:
    """``points``: dicts with success, tokens, label, on_front, production, feasible."""
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = [
        ("other candidates", lambda p: not p["on_front"] and not p["production"], dict(c="#9aa5b1", marker="o")),
        ("Pareto front", lambda p: p["on_front"] and p["feasible"] and not p["production"],
         dict(c="#1f77b4", marker="o", s=60)),
        ("infeasible (control regression)", lambda p: not p["feasible"] and not p["production"],
         dict(c="#d62728", marker="x")),
        ("production", lambda p: p["production"], dict(c="#2ca02c", marker="*", s=180)),
    ]
    for label, pick, style in styles:
        chosen = [p for p in points if pick(p)]
        if chosen:
            ax.scatter([p["tokens"] for p in chosen], [p["success"] for p in chosen], label=label, **style)
    front = sorted((p for p in points if p["on_front"] and p["feasible"]), key=lambda p: p["tokens"])
    if len(front) > 1:
        ax.plot([p["tokens"] for p in front], [p["success"] for p in front], c="#1f77b4", lw=1, alpha=0.6)
    for p in points:
        if p["on_front"] or p["production"]:
            ax.annotate(p["label"], (p["tokens"], p["success"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
    ax.set_xlabel("tokens per item (fewer is better)")
    ax.set_ylabel("success rate (screen)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def pareto_plot(front: Any) -> dg.MetadataValue:
    """The Pareto scatter of a ``genepool.steps.Front`` (every screened member and production)."""
    points = []
    for m in front.members:
        points.append({"success": m.screen.success, "tokens": m.screen.avg_tokens, "label": f"v{m.version}",
                       "on_front": m.on_front, "feasible": m.feasible,
                       "production": m.prompt_id == front.production_id})
    if not any(p["production"] for p in points):
        b = front.baseline_screen
        points.append({"success": b.success, "tokens": b.avg_tokens, "label": "production", "on_front": False,
                       "feasible": True, "production": True})
    fig = pareto_figure(points, f"{front.partition_key}: candidates on the regression set")
    return png_markdown(fig, f"Pareto front of {front.partition_key}")


def agent_history(db: Any, agent_type: str) -> list[dict]:
    """Per generation of one agent: best success, fewest tokens (feasible front members), front size."""
    return db.fetchall(
        "SELECT e.generation, max(f.success_rate) FILTER (WHERE f.feasible) AS best_success,"
        " min(f.avg_tokens) FILTER (WHERE f.feasible) AS min_tokens, count(*) AS members"
        " FROM genepool.experiments e JOIN genepool.front_members f ON f.experiment_id = e.id"
        " WHERE e.agent_type = %s GROUP BY e.generation ORDER BY e.generation",
        (agent_type,),
    )


def history_figure(agent_type: str, rows: Sequence[dict]) -> Any:
    gens = [r["generation"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(gens, [r["best_success"] if r["best_success"] is not None else float("nan") for r in rows],
            marker="o", c="#1f77b4", label="best success")
    ax.set_xlabel("generation")
    ax.set_ylabel("best success rate", color="#1f77b4")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(gens)
    ax2 = ax.twinx()
    ax2.plot(gens, [r["min_tokens"] if r["min_tokens"] is not None else float("nan") for r in rows],
             marker="s", c="#ff7f0e", label="fewest tokens")
    ax2.set_ylabel("fewest tokens per item", color="#ff7f0e")
    ax.set_title(f"{agent_type}: success and tokens over generations", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def agent_history_plot(db: Any, agent_type: str) -> dg.MetadataValue:
    rows = agent_history(db, agent_type)
    return png_markdown(history_figure(agent_type, rows), f"{agent_type} over generations")
