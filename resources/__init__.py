"""Dagster resources: thin ``ConfigurableResource`` wrappers over the plain classes in ``genepool``."""

from resources.dbt import GenepoolDbtCliResource, dbt_resource
from resources.langfuse import LangfuseResource
from resources.llm import LLMResource
from resources.optimizer import OptimizerResource
from resources.postgres import PostgresResource

__all__ = [
    "GenepoolDbtCliResource",
    "LLMResource",
    "LangfuseResource",
    "OptimizerResource",
    "PostgresResource",
    "dbt_resource",
]
