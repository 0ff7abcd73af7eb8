"""Any ``/v1/chat/completions`` server (vLLM, Ollama, OpenAI, ``python -m llama_cpp.server``) over one shared
keep-alive ``httpx.Client``: bounded retries with exponential backoff and jitter on 429/500/502/503/504 and
connection errors (honouring Retry-After, capped), a per-call timeout, redirects never followed, plain http
only to loopback unless allowed. The API key is read from an environment variable at call time; it is never
logged or stored, and error messages carry at most a short scrubbed excerpt of a server's answer."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from genepool.llm.env import _env_flag
from genepool.llm.scrub import scrub
from genepool.llm.types import CHARS_PER_TOKEN_LIMIT, DEFAULT_MAX_PROMPT_CHARS, LLMError, RawCompletion
from genepool.llm.urls import normalise_base_url

log = logging.getLogger("genepool.llm")  # the package's logger name, as before the split

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
