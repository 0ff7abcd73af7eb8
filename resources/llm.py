"""A task or reflection model as a Dagster resource."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from genepool.db import Database
from genepool.llm import LLMClient, build_client


class LLMResource(dg.ConfigurableResource):
    """``provider``: llama_cpp (default, in-process SmolLM2) or openai_compatible (base_url + model; the
    key is read from the environment variable named by ``api_key_env``)."""

    provider: str = "llama_cpp"
    model_path: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    seed: int = 0
    _client: LLMClient | None = PrivateAttr(default=None)

    def client(self, db: Database) -> LLMClient:
        if self._client is None or self._client.db is not db:
            self._client = build_client(
                db,
                provider=self.provider,
                model_path=self.model_path,
                base_url=self.base_url,
                model=self.model,
                api_key_env=self.api_key_env,
                seed=self.seed,
            )
        return self._client
