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
    n_ctx: int | None = None  # llama_cpp: context size (default 2048); both: prompt limit 8 chars x n_ctx
    timeout_s: float = 120.0  # per HTTP attempt (openai_compatible)
    max_retries: int = 4  # on 429/5xx/timeouts/connection errors, with backoff honouring Retry-After
    llm_concurrency: int = 1  # parallel calls per step (openai_compatible only; llama_cpp stays 1)
    rpm_limit: int | None = None  # requests/min per (base_url, model), shared through PostgreSQL
    tpm_limit: int | None = None  # tokens/min per (base_url, model)
    allow_insecure_http: bool = False  # plain http:// to a non-loopback host
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
                n_ctx=self.n_ctx,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
                llm_concurrency=self.llm_concurrency,
                rpm_limit=self.rpm_limit,
                tpm_limit=self.tpm_limit,
                allow_insecure_http=self.allow_insecure_http,
            )
        return self._client
