"""Dagster resources: thin configurable wrappers over the plain resources in this package."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import PrivateAttr

from genepool.pipeline import GenerationConfig
from genepool.resources.llm import CostTable, LlamaCppProvider, LLMClient, OpenAICompatibleProvider
from genepool.resources.postgres import Database, migrate, resolve_urls
from genepool.resources.registry import PromptRegistry

_DATABASES: dict[str, Database] = {}


class PostgresResource(dg.ConfigurableResource):
    """The genepool database: GENEPOOL_DATABASE_URL if set, else the embedded server in the data folder."""

    database_url: str | None = None

    def database(self) -> Database:
        url = self.database_url or os.environ.get("GENEPOOL_DATABASE_URL") or resolve_urls().genepool
        if url not in _DATABASES:
            migrate(url)
            _DATABASES[url] = Database(url)
        return _DATABASES[url]

    def registry(self) -> PromptRegistry:
        return PromptRegistry(self.database())


class LLMResource(dg.ConfigurableResource):
    """A task or reflection model. ``provider``: llama_cpp (default, in-process SmolLM2) or
    openai_compatible (base_url + model; the key is read from the env var named by api_key_env)."""

    provider: str = "llama_cpp"
    model_path: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    seed: int = 0
    _client: LLMClient | None = PrivateAttr(default=None)

    def client(self, db: Database) -> LLMClient:
        if self._client is None or self._client.db is not db:
            if self.provider == "llama_cpp":
                provider = LlamaCppProvider(model_path=self.model_path, seed=self.seed)
            elif self.provider == "openai_compatible":
                if not self.base_url or not self.model:
                    raise ValueError("LLMResource(provider='openai_compatible') needs base_url and model")
                provider = OpenAICompatibleProvider(self.base_url, self.model, self.api_key_env)
            else:
                raise ValueError(f"LLMResource.provider={self.provider!r} is unknown; use llama_cpp or openai_compatible")
            self._client = LLMClient(provider, db, CostTable.from_env())
        return self._client


class OptimizerResource(dg.ConfigurableResource):
    """Budgets and sizes of a generation (see genepool.pipeline.GenerationConfig)."""

    seed: int = 1234
    trace_items: int = 40
    population_size: int = 8
    n_targets: int = 12
    n_controls: int = 8
    validate_top: int = 3
    max_parents: int = 4
    validation_items: int = 30
    test_items: int = 0
    report_test: bool = True
    max_rollouts: int = 600
    max_tokens: int | None = None
    max_usd: float | None = None
    max_usd_per_day: float | None = None
    max_control_regressions: int = 0
    n_reflect: int = 0
    max_examples: int = 10
    examples_per_mine: int = 5
    use_reflection_model: bool = False

    def config(self) -> GenerationConfig:
        fields = GenerationConfig.__dataclass_fields__
        return GenerationConfig(**{k: getattr(self, k) for k in fields if hasattr(self, k)})
