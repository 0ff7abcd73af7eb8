"""LLM settings from the environment and ``build_client`` (the Dagster resource and the CLI use these)."""

from __future__ import annotations

import os
from typing import Any

from genepool.db import Database
from genepool.llm.client import LLMClient
from genepool.llm.costs import CostTable
from genepool.llm.env import _env_flag, _env_float, _env_int
from genepool.llm.llama import LlamaCppProvider
from genepool.llm.openai_compatible import OpenAICompatibleProvider
from genepool.llm.types import Provider


def llm_settings_from_env(prefix: str = "GENEPOOL_LLM") -> dict[str, Any]:
    """``build_client`` keyword arguments from ``{prefix}_*`` environment variables (validated)."""
    provider = os.environ.get(f"{prefix}_PROVIDER", "llama_cpp")
    return {
        "provider": provider,
        "model_path": os.environ.get(f"{prefix}_MODEL_PATH") or None,
        "base_url": os.environ.get(f"{prefix}_BASE_URL") or None,
        "model": os.environ.get(f"{prefix}_MODEL") or None,
        "api_key_env": os.environ.get(f"{prefix}_API_KEY_ENV", "OPENAI_API_KEY"),
        "n_ctx": _env_int(f"{prefix}_N_CTX", None, 16, 1_048_576),
        "timeout_s": _env_float(f"{prefix}_TIMEOUT_S", 120.0, 0.1, 3600.0),
        "max_retries": _env_int(f"{prefix}_MAX_RETRIES", 4, 0, 20),
        "llm_concurrency": _env_int(f"{prefix}_CONCURRENCY", 1, 1, 64),
        "rpm_limit": _env_int(f"{prefix}_RPM_LIMIT", None, 1, 10**7),
        "tpm_limit": _env_int(f"{prefix}_TPM_LIMIT", None, 1, 10**10),
        "allow_insecure_http": _env_flag(f"{prefix}_ALLOW_INSECURE_HTTP"),
    }


def build_client(
    db: Database | None,
    *,
    provider: str = "llama_cpp",
    model_path: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    seed: int = 0,
    n_ctx: int | None = None,
    timeout_s: float = 120.0,
    max_retries: int = 4,
    llm_concurrency: int = 1,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    allow_insecure_http: bool = False,
) -> LLMClient:
    """An ``LLMClient`` for a provider named in settings (the Dagster resource and the CLI use this)."""
    if provider == "llama_cpp":
        prov: Provider = LlamaCppProvider(model_path=model_path, n_ctx=n_ctx or 2048, seed=seed)
    elif provider == "openai_compatible":
        if not base_url or not model:
            raise ValueError("provider 'openai_compatible' needs base_url and model")
        prov = OpenAICompatibleProvider(
            base_url, model, api_key_env, timeout_s, max_retries=max_retries,
            allow_insecure_http=allow_insecure_http or None, seed=seed, n_ctx=n_ctx,
        )
    else:
        raise ValueError(f"LLM provider {provider!r} is unknown; use llama_cpp or openai_compatible")
    limiter = None
    if rpm_limit is not None or tpm_limit is not None:
        if db is None:
            raise ValueError("rpm_limit/tpm_limit need the database (the rate limit is shared through PostgreSQL)")
        from genepool.ratelimit import RateLimiter

        limiter = RateLimiter(db, getattr(prov, "rate_key", f"{prov.name}|{prov.model}"), rpm_limit, tpm_limit)
    return LLMClient(prov, db, CostTable.from_env(), concurrency=llm_concurrency, rate_limiter=limiter)
