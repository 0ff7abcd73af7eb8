"""``LLMClient``: the caching, accounting front of one provider (``genepool.llm_cache``, ``genepool.llm_calls``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from genepool.db import Database
from genepool.llm.costs import CostTable
from genepool.llm.requests import _storable, normalise_params, request_hash, validate_messages
from genepool.llm.types import DEFAULT_MAX_PROMPT_CHARS, Completion, Provider


@dataclass(frozen=True)
class _Prepared:
    messages: list[dict[str, str]]
    params: dict[str, Any]
    hash: str


class LLMClient:
    """Caching, accounting front of one provider. ``db=None`` disables the cache (unit tests only).

    ``concurrency`` bounds ``chat_many``'s parallel calls; it is capped by the provider's
    ``max_concurrency`` (1 for llama_cpp and for providers that do not declare it).
    ``rate_limiter`` (a ``genepool.ratelimit.RateLimiter``) is charged on cache misses only.
    """

    def __init__(
        self,
        provider: Provider,
        db: Database | None = None,
        cost_table: CostTable | None = None,
        *,
        concurrency: int = 1,
        rate_limiter: Any = None,
    ):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
            raise ValueError(f"llm_concurrency={concurrency!r} must be an integer between 1 and 64")
        self.provider = provider
        self.db = db
        self.cost_table = cost_table or CostTable()
        self.concurrency = min(concurrency, int(getattr(provider, "max_concurrency", 1)))
        self.rate_limiter = rate_limiter
        self._lock = threading.Lock()
        self._identity: dict[str, Any] | None = None
        self.calls_made = 0  # uncached calls in this process
        self.calls_cached = 0
        self.retries = 0  # extra HTTP attempts (429/5xx/timeouts) behind the calls made

    @property
    def model(self) -> str:
        return self.provider.model

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            fn = getattr(self.provider, "cache_identity", None)
            self._identity = dict(fn()) if fn else {}
        return self._identity

    def prepare(self, messages: list[dict[str, str]], params: dict[str, Any] | None = None) -> _Prepared:
        """Validate one request and compute its cache key (no call, no database access)."""
        max_chars = int(getattr(self.provider, "max_prompt_chars", DEFAULT_MAX_PROMPT_CHARS))
        msgs = validate_messages(messages, max_chars)
        p = normalise_params(params or {})
        return _Prepared(msgs, p, request_hash(self.provider.name, self.provider.model, msgs, p, self.identity()))

    def chat(
        self,
        messages: list[dict[str, str]],
        params: dict[str, Any] | None = None,
        *,
        purpose: str = "",
        partition_key: str | None = None,
    ) -> Completion:
        return self._chat(self.prepare(messages, params), purpose, partition_key)

    def chat_many(
        self,
        requests: Sequence[tuple[list[dict[str, str]], dict[str, Any] | None]],
        *,
        purpose: str = "",
        partition_key: str | None = None,
    ) -> list[Completion]:
        """Answers to ``requests`` ((messages, params) pairs) in submission order, up to ``concurrency`` at
        once. Every request is validated before any call. Identical requests are called once (the others
        are served from the cache). On an error the calls not started are cancelled, the running ones
        finish (and are cached), and the first error in submission order is raised."""
        prepared = [self.prepare(m, p) for m, p in requests]
        if self.concurrency <= 1 or len(prepared) <= 1:
            return [self._chat(p, purpose, partition_key) for p in prepared]
        firsts: dict[str, int] = {}
        for i, p in enumerate(prepared):
            firsts.setdefault(p.hash, i)
        results: dict[int, Completion] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="genepool-llm") as pool:
            futures = {i: pool.submit(self._chat, prepared[i], purpose, partition_key) for i in firsts.values()}
            try:
                for i in sorted(futures):
                    results[i] = futures[i].result()
            except BaseException:
                for f in futures.values():
                    f.cancel()
                raise
        return [results[i] if i in results else self._chat(p, purpose, partition_key) for i, p in enumerate(prepared)]

    def _chat(self, req: _Prepared, purpose: str, partition_key: str | None) -> Completion:
        started = time.perf_counter()
        row = self._cached(req.hash)
        if row is not None:
            comp = Completion(
                text=row["response"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                latency_ms=row["latency_ms"],
                cost_usd=row["cost_usd"],
                cached=True,
                request_hash=req.hash,
                attempts=0,
            )
            with self._lock:
                self.calls_cached += 1
        else:
            estimate = 0
            if self.rate_limiter is not None:
                estimate = sum(len(m["content"]) for m in req.messages) // 4 + 1 + req.params["max_tokens"]
                self.rate_limiter.acquire(tokens=estimate)
            raw = self.provider.complete(req.messages, req.params)
            if self.rate_limiter is not None:
                self.rate_limiter.adjust(int(raw.prompt_tokens) + int(raw.completion_tokens) - estimate)
            attempts = int(getattr(raw, "attempts", 1) or 1)
            with self._lock:
                self.calls_made += 1
                self.retries += attempts - 1
            cost = self.cost_table.cost(self.provider.model, raw.prompt_tokens, raw.completion_tokens)
            comp = Completion(
                _storable(raw.text), raw.prompt_tokens, raw.completion_tokens, raw.latency_ms, cost, False, req.hash,
                attempts,
            )
            self._store(req, comp)
        self._log(comp, purpose, partition_key, (time.perf_counter() - started) * 1000)
        return comp

    # --- persistence ---------------------------------------------------------------------------
    def _cached(self, h: str) -> dict | None:
        if self.db is None:
            return None
        return self.db.fetchone("SELECT * FROM genepool.llm_cache WHERE request_hash = %s", (h,))

    def _store(self, req: _Prepared, comp: Completion) -> None:
        if self.db is None:
            return
        self.db.execute(
            "INSERT INTO genepool.llm_cache (request_hash, provider, model, request, response, prompt_tokens,"
            " completion_tokens, latency_ms, cost_usd) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (request_hash) DO NOTHING",
            (
                req.hash,
                self.provider.name,
                self.provider.model,
                json.dumps({"messages": req.messages, "params": req.params, "identity": self.identity()}),
                comp.text,
                comp.prompt_tokens,
                comp.completion_tokens,
                comp.latency_ms,
                comp.cost_usd,
            ),
        )

    def _log(self, comp: Completion, purpose: str, partition_key: str | None, wall_ms: float) -> None:
        if self.db is None:
            return
        self.db.execute(
            "INSERT INTO genepool.llm_calls (request_hash, provider, model, purpose, partition_key, cached,"
            " prompt_tokens, completion_tokens, latency_ms, wall_ms, cost_usd, attempts)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                comp.request_hash,
                self.provider.name,
                self.provider.model,
                purpose,
                partition_key,
                comp.cached,
                comp.prompt_tokens,
                comp.completion_tokens,
                comp.latency_ms,
                wall_ms,
                comp.cost_usd if not comp.cached else 0.0,
                comp.attempts,
            ),
        )
