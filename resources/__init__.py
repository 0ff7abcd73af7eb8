"""Dagster resources: thin ``ConfigurableResource`` wrappers over the plain classes in ``genepool``."""

from resources.dbt import GenepoolDbtCliResource, dbt_resource
from resources.io_manager import PostgresIOManager
from resources.langfuse import LangfuseResource
from resources.llm import LLMResource
from resources.optimizer import OptimizerResource
from resources.postgres import PostgresResource

__all__ = [
    "GenepoolDbtCliResource",
    "LLMResource",
    "LangfuseResource",
    "OptimizerResource",
    "PostgresIOManager",
    "PostgresResource",
    "dbt_resource",
]
