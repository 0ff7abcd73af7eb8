"""Errors, result types and the ``Provider`` protocol every LLM provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class LLMError(RuntimeError):
    """An LLM call failed or timed out. Re-running the step resumes from the cache."""


class LLMInputError(LLMError, ValueError):
    """A request was refused before any call (bad field, NUL byte, too large). The message names the field."""


@dataclass(frozen=True)
class RawCompletion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    attempts: int = 1  # HTTP attempts this answer took (retries + 1)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float  # latency of the original call (a cached answer keeps it, for reproducibility)
    cost_usd: float
    cached: bool
    request_hash: str
    attempts: int = 1

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Provider(Protocol):
    name: str
    model: str

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawCompletion: ...


# Optional provider attributes read with getattr (test doubles may leave them out):
#   cache_identity() -> dict   extra cache-key fields (base_url, model file sha256, n_ctx, seed)
#   max_prompt_chars: int      refuse larger requests before any call
#   max_concurrency: int       upper bound of LLMClient.concurrency (1 when absent)
#   rate_key: str              the shared rate-limit bucket name
DEFAULT_MAX_PROMPT_CHARS = 1_000_000
CHARS_PER_TOKEN_LIMIT = 8  # the prompt size limit is 8 characters per token of context
