"""An inline SVG scatter plot of success rate vs average tokens, Pareto front highlighted.

Generated as text (no files, no JavaScript); every label goes through markupsafe.escape.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

W, H = 760, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 210, 20, 48


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start, end = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 10) for i in range(start, end + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


def pareto_svg(points: list[dict[str, Any]], *, title: str = "") -> Markup:
    """Scatter of ``points`` (dicts with prompt_id, version, success_rate, avg_tokens, on_front, state)."""
    if not points:
        return Markup('<p class="muted">No evaluated prompts in the latest generation yet.</p>')
    xs = [float(p["avg_tokens"]) for p in points]
    pad = max((max(xs) - min(xs)) * 0.08, 1.0)
    xticks = _nice_ticks(max(0.0, min(xs) - pad), max(xs) + pad)
    x0, x1 = xticks[0], xticks[-1]
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return TOP + (1.0 - v) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pareto" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title or "Pareto plot")}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fbfbfd" stroke="#ccc"/>',
    ]
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = sy(t)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6ee"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" class="tick">{t:.0%}</text>')
    for t in xticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#eeeef3"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle" class="tick">{_fmt(t)}</text>')
    out.append(
        f'<text x="{LEFT + pw / 2:.1f}" y="{H - 8}" text-anchor="middle" class="axis">'
        "average tokens per item (prompt + completion) &#8594; fewer is better</text>"
    )
    out.append(
        f'<text transform="translate(16 {TOP + ph / 2:.1f}) rotate(-90)" text-anchor="middle" class="axis">'
        "success rate</text>"
    )
    front = sorted((p for p in points if p.get("on_front")), key=lambda p: (p["avg_tokens"], -p["success_rate"]))
    if len(front) > 1:
        path = " ".join(f"{sx(p['avg_tokens']):.1f},{sy(p['success_rate']):.1f}" for p in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#e8590c" stroke-width="2" '
                   'stroke-dasharray="5 3"/>')
    for p in sorted(points, key=lambda p: bool(p.get("on_front"))):
        x, y = sx(float(p["avg_tokens"])), sy(float(p["success_rate"]))
        state = p.get("state") or ""
        tip = escape(
            f"{p['prompt_id']} v{p.get('version', '')} ({state or 'unknown'}): "
            f"success {p['success_rate']:.0%}, {p['avg_tokens']:.1f} tokens"
            + (", on the Pareto front" if p.get("on_front") else "")
        )
        fill = "#e8590c" if p.get("on_front") else "#adb5bd"
        if state == "production":
            out.append(f'<rect x="{x - 7:.1f}" y="{y - 7:.1f}" width="14" height="14" fill="#1c7ed6" '
                       f'stroke="#0b3d91" stroke-width="1.5"><title>{tip}</title></rect>')
        else:
            stroke = ' stroke="#1c1c1c" stroke-width="1.5"' if state == "candidate" else ""
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{fill}"{stroke}><title>{tip}</title></circle>')
        if state in ("production", "candidate"):
            out.append(f'<text x="{x + 9:.1f}" y="{y - 8:.1f}" class="label">v{escape(p.get("version", ""))}</text>')
    lx, ly = LEFT + pw + 24, TOP + 16
    out.append(
        f'<g class="legend"><rect x="{lx - 6}" y="{ly - 14}" width="180" height="74" fill="white" stroke="#ddd"/>'
        f'<circle cx="{lx + 6}" cy="{ly}" r="5" fill="#e8590c"/>'
        f'<text x="{lx + 16}" y="{ly + 4}">on the Pareto front</text>'
        f'<circle cx="{lx + 6}" cy="{ly + 16}" r="5" fill="#adb5bd"/><text x="{lx + 16}" y="{ly + 20}">dominated</text>'
        f'<circle cx="{lx + 6}" cy="{ly + 32}" r="5" fill="white" stroke="#1c1c1c" stroke-width="1.5"/>'
        f'<text x="{lx + 16}" y="{ly + 36}">candidate (outlined)</text>'
        f'<rect x="{lx + 1}" y="{ly + 43}" width="10" height="10" fill="#1c7ed6"/>'
        f'<text x="{lx + 16}" y="{ly + 52}">production</text></g>'
    )
    out.append("</svg>")
    return Markup("\n".join(out))
