"""The asset areas of the code location, each a small ``dg.Definitions`` that
``orchestration/definitions.py`` merges: the registry, one generation, the dbt metrics, the checks."""

from __future__ import annotations

import dagster as dg

from assets import checks, evolution, promotion, registry, traces
from assets.metrics import metrics_dbt_assets

# The asset lists themselves, for callers that materialise an area directly (the CLI, the tests).
registry_assets = dg.load_assets_from_modules([registry])
generation_assets = dg.load_assets_from_modules([traces, evolution, promotion])


def registry_defs() -> dg.Definitions:
    """prompt_registry and benchmark (group "registry", unpartitioned)."""
    return dg.Definitions(assets=registry_assets)


def generation_defs() -> dg.Definitions:
    """traces -> ... -> promoted_prompts (group "generation", one partition per agent generation)."""
    return dg.Definitions(assets=generation_assets)


def metrics_defs() -> dg.Definitions:
    """The dbt models (group "metrics"); their dbt tests come with them as asset checks."""
    return dg.Definitions(assets=[metrics_dbt_assets])


def checks_defs() -> dg.Definitions:
    """The Python asset checks on the registry and the generation assets."""
    return dg.Definitions(asset_checks=[*checks.GENERATION_CHECKS, *checks.REGISTRY_CHECKS])
