"""The genepool code location: assets, checks, jobs, sensors and resources.

Load it with ``dagster dev -w workspace.yaml`` (or ``dagster definitions validate -w workspace.yaml``).
Resources are chosen from the environment: GENEPOOL_DATABASE_URL (else the embedded PostgreSQL in the
data folder), GENEPOOL_LLM_* for the task model and GENEPOOL_REFLECTION_* for the reflection model.
"""

from __future__ import annotations

import os

import dagster as dg

from assets import checks, evolution, promotion, registry, traces
from assets.metrics import metrics_asset_selection, metrics_dbt_assets
from resources.dbt import dbt_resource
from orchestration.jobs import approval_job, generation_job
from orchestration.sensors import (
    metric_threshold_sensor,
    run_failure_recorder,
    trace_ingest_sensor,
)
from resources import LLMResource, OptimizerResource, PostgresResource
from resources.langfuse import LangfuseResource


def llm_from_env(prefix: str) -> LLMResource:
    kind = os.environ.get(f"{prefix}_PROVIDER", "llama_cpp")
    return LLMResource(
        provider=kind,
        model_path=os.environ.get(f"{prefix}_MODEL_PATH"),
        base_url=os.environ.get(f"{prefix}_BASE_URL"),
        model=os.environ.get(f"{prefix}_MODEL"),
        api_key_env=os.environ.get(f"{prefix}_API_KEY_ENV", "OPENAI_API_KEY"),
    )


def optimizer_from_env() -> OptimizerResource:
    """Optimizer settings; GENEPOOL_OPTIMIZER may hold JSON overrides, e.g. {"population_size": 12}."""
    import json

    raw = os.environ.get("GENEPOOL_OPTIMIZER")
    overrides = json.loads(raw) if raw else {}
    if "seed" not in overrides and os.environ.get("GENEPOOL_SEED"):
        overrides["seed"] = int(os.environ["GENEPOOL_SEED"])
    return OptimizerResource(**overrides)


def default_resources() -> dict:
    return {
        "postgres": PostgresResource(database_url=os.environ.get("GENEPOOL_DATABASE_URL")),
        "llm": llm_from_env("GENEPOOL_LLM"),
        "reflection_llm": llm_from_env("GENEPOOL_REFLECTION"),
        "optimizer": optimizer_from_env(),
        "langfuse": LangfuseResource(),  # active only when LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are set
        "dbt": dbt_resource(os.environ.get("GENEPOOL_DATABASE_URL")),
    }


metrics_job = dg.define_asset_job("metrics_job", selection=metrics_asset_selection,
                                  description="dbt build of the metrics models and their tests.")

generation_assets = dg.load_assets_from_modules([traces, evolution, promotion])
registry_assets = dg.load_assets_from_modules([registry])

defs = dg.Definitions(
    assets=[*registry_assets, *generation_assets, metrics_dbt_assets],
    asset_checks=[*checks.GENERATION_CHECKS, *checks.REGISTRY_CHECKS],
    jobs=[generation_job, approval_job, metrics_job],
    sensors=[metric_threshold_sensor, trace_ingest_sensor, run_failure_recorder],
    resources=default_resources(),
)
