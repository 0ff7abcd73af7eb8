"""Project-wide settings, read from the environment with safe defaults.

Nothing here reads or stores API keys: providers read their key from the environment variable
they are configured with, at call time.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Folder for the embedded PostgreSQL cluster, DAGSTER_HOME and generated files."""
    path = Path(os.environ.get("GENEPOOL_DATA_DIR", PROJECT_ROOT / "data")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def dagster_home() -> Path:
    path = Path(os.environ.get("DAGSTER_HOME", data_dir() / "dagster_home")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_seed() -> int:
    return int(os.environ.get("GENEPOOL_SEED", "1234"))


DEFAULT_AGENT = "support-desk"
