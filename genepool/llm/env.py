"""Validated reads of environment variables (flags, bounded integers and numbers)."""

from __future__ import annotations

import math
import os


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r} must be an integer between {lo} and {hi}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name}={v} must be between {lo} and {hi}")
    return v


def _env_float(name: str, default: float, lo: float, hi: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = float(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r} must be a number between {lo} and {hi}") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{name}={raw[:40]} must be a number between {lo} and {hi}")
    return v
