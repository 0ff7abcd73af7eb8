"""The code location's resources, chosen from the environment.

GENEPOOL_DATABASE_URL (else the embedded PostgreSQL in the data folder), GENEPOOL_LLM_* for the task
model, GENEPOOL_REFLECTION_* for the reflection model, GENEPOOL_OPTIMIZER for the generation settings.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from resources import LLMResource, OptimizerResource, PostgresResource
from resources.dbt import dbt_resource
from resources.io_manager import PostgresIOManager
from resources.langfuse import LangfuseResource


def llm_from_env(prefix: str) -> LLMResource:
    """{prefix}_PROVIDER, _MODEL_PATH, _BASE_URL, _MODEL, _API_KEY_ENV, _N_CTX, _TIMEOUT_S, _MAX_RETRIES,
    _CONCURRENCY, _RPM_LIMIT, _TPM_LIMIT, _ALLOW_INSECURE_HTTP (validated by genepool.llm)."""
    from genepool.llm import llm_settings_from_env

    return LLMResource(**llm_settings_from_env(prefix))


def optimizer_from_env() -> OptimizerResource:
    """Optimizer settings; GENEPOOL_OPTIMIZER may hold JSON overrides, e.g. {"population_size": 12}."""
    from genepool.settings import GenerationConfig

    raw = os.environ.get("GENEPOOL_OPTIMIZER")
    try:
        overrides = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"GENEPOOL_OPTIMIZER is not valid JSON ({exc}); e.g. {{\"population_size\": 12}}") from None
    if isinstance(overrides, dict) and "seed" not in overrides and os.environ.get("GENEPOOL_SEED"):
        try:
            overrides["seed"] = int(os.environ["GENEPOOL_SEED"])
        except ValueError:
            raise ValueError(f"GENEPOOL_SEED={os.environ['GENEPOOL_SEED']!r} must be a whole number") from None
    GenerationConfig.from_overrides(overrides)  # unknown keys, NaN, negative or infinite caps: one clear error
    return OptimizerResource(**overrides)


def database_url_config() -> dg.EnvVar | None:
    """GENEPOOL_DATABASE_URL by NAME (``dg.EnvVar``), resolved when a run starts, so its password never lands in
    the job's resource config (Dagster UI, GraphQL, run storage); None (the embedded server) when unset."""
    return dg.EnvVar("GENEPOOL_DATABASE_URL") if os.environ.get("GENEPOOL_DATABASE_URL") else None


def default_resources() -> dict:
    return {
        "postgres": PostgresResource(database_url=database_url_config()),
        "llm": llm_from_env("GENEPOOL_LLM"),
        "reflection_llm": llm_from_env("GENEPOOL_REFLECTION"),
        "optimizer": optimizer_from_env(),
        "langfuse": LangfuseResource(),  # active only when LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are set
        "dbt": dbt_resource(database_url_config()),
        # step outputs in PostgreSQL (not on local disk): any worker can re-execute any step
        "io_manager": PostgresIOManager(database_url=database_url_config()),
    }


def defs() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
