"""Record real model answers once, replay them in tests, and fail on any request that was not recorded.

``RecordingProvider(inner, path)`` wraps a real provider (``genepool.llm.Provider``): it passes each
request through and appends the request (provider and model identity, messages, parameters) and the
answer to a JSONL file, one line per distinct request, keyed by a content hash. The file is written
to ``<path>.partial`` and moved into place by ``close()``, so an interrupted recording never replaces
a good one.

``ReplayProvider(path)`` serves those answers under the recorded identity (name, model and the inner
provider's ``cache_identity()``), so ``LLMClient`` computes the same cache keys it did while recording.
A request the recording does not hold raises ``UnseenRequestError`` naming its short hash and the start
of the last user message. Because callers may catch exceptions from a model call (a failed reflection
must not stop breeding), every miss is also kept in ``ReplayProvider.misses``; ``assert_complete()``
raises if there was any.

The file format (one JSON object per line)::

    {"key": "<sha256>", "provider": "llama_cpp", "model": "X.gguf", "messages": [...], "params": {...},
     "cache_identity": {...} or null,
     "response": {"text": "...", "prompt_tokens": 12, "completion_tokens": 3, "latency_ms": 41.0}}
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genepool.llm import Provider, RawCompletion

RERECORD_HINT = "re-record it with `make record` if the change in requests is intended"


class ReplayError(RuntimeError):
    """A recording is missing, malformed or does not fit the provider that reads it."""


class UnseenRequestError(ReplayError):
    """The code sent a request that the recording does not hold."""


def canonical_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON would give them back (tuples -> lists), so a recorded request hashes the same."""
    return json.loads(json.dumps(dict(params), sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"parameter value {value!r} of type {type(value).__name__} cannot be recorded as JSON")


def request_key(provider: str, model: str, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any]) -> str:
    """SHA-256 of the request's identity and content (independent of ``genepool.llm``'s cache key)."""
    payload = json.dumps(
        {
            "provider": provider,
            "model": model,
            "messages": [dict(m) for m in messages],
            "params": canonical_params(params),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def last_user_message(messages: Sequence[Mapping[str, str]], limit: int = 200) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))[:limit]
    return ""


@dataclass(frozen=True)
class Recorded:
    key: str
    provider: str
    model: str
    messages: list[dict[str, str]]
    params: dict[str, Any]
    response: RawCompletion
    cache_identity: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "provider": self.provider,
                "model": self.model,
                "messages": self.messages,
                "params": self.params,
                "cache_identity": self.cache_identity,
                "response": {
                    "text": self.response.text,
                    "prompt_tokens": self.response.prompt_tokens,
                    "completion_tokens": self.response.completion_tokens,
                    "latency_ms": self.response.latency_ms,
                },
            },
            ensure_ascii=False,
            sort_keys=True,
        )


class RecordingProvider:
    """Passes requests to ``inner`` and records each distinct request and its answer (see module doc).
    Other attributes (``cache_identity``, ``max_prompt_chars``, ...) are the inner provider's."""

    def __init__(self, inner: Provider, path: str | os.PathLike[str]):
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._file = self._partial.open("w", encoding="utf-8")
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._identity: dict[str, Any] | None = None
        self.recorded = 0

    def __getattr__(self, name: str) -> Any:  # only called for attributes not set above
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _cache_identity(self) -> dict[str, Any] | None:
        if self._identity is None:
            fn = getattr(self.inner, "cache_identity", None)
            self._identity = canonical_params(fn()) if fn else {}
        return self._identity or None

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawCompletion:
        raw = self.inner.complete(messages, params)
        key = request_key(self.name, self.model, messages, params)
        with self._lock:
            if self._file.closed:
                raise ReplayError(f"the recording {self.path} is already closed; start a new RecordingProvider")
            if key not in self._seen:
                self._seen.add(key)
                messages_copy = [dict(m) for m in messages]
                ident = self._cache_identity()
                rec = Recorded(key, self.name, self.model, messages_copy, canonical_params(params), raw, ident)
                self._file.write(rec.to_json() + "\n")
                self._file.flush()
                self.recorded += 1
        return raw

    def close(self) -> Path:
        """Finish the recording: ``<path>.partial`` replaces ``path`` (atomically)."""
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial recording and leave ``path`` as it was."""
        with self._lock:
            if not self._file.closed:
                self._file.close()
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> RecordingProvider:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def load_recording(path: str | os.PathLike[str]) -> dict[str, Recorded]:
    """The recorded requests by key; one ``ReplayError`` naming the file, line and field otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"recording {path} does not exist; {RERECORD_HINT}")
    out: dict[str, Recorded] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{where}: not valid JSON ({exc.msg}); {RERECORD_HINT}") from None
            rec = _parse_line(obj, where)
            if rec.key in out:
                raise ReplayError(f"{where}: request {rec.key[:12]} is recorded twice; {RERECORD_HINT}")
            out[rec.key] = rec
    return out


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise ReplayError(f"{where}: field {name!r} is missing; {RERECORD_HINT}")
    value = obj[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ReplayError(f"{where}: field {name!r} has type {type(value).__name__}; {RERECORD_HINT}")
    return value


def _parse_line(obj: Any, where: str) -> Recorded:
    if not isinstance(obj, dict):
        raise ReplayError(f"{where}: a line must be a JSON object; {RERECORD_HINT}")
    key = _field(obj, "key", str, where)
    provider = _field(obj, "provider", str, where)
    model = _field(obj, "model", str, where)
    messages = _field(obj, "messages", list, where)
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ReplayError(f"{where}: messages[{i}] needs string 'role' and 'content'; {RERECORD_HINT}")
    params = _field(obj, "params", dict, where)
    resp = _field(obj, "response", dict, where)
    response = RawCompletion(
        text=_field(resp, "text", str, where + " response"),
        prompt_tokens=_field(resp, "prompt_tokens", int, where + " response"),
        completion_tokens=_field(resp, "completion_tokens", int, where + " response"),
        latency_ms=float(_field(resp, "latency_ms", (int, float), where + " response")),
    )
    ident = obj.get("cache_identity")
    if ident is not None and not isinstance(ident, dict):
        raise ReplayError(f"{where}: field 'cache_identity' has type {type(ident).__name__}; {RERECORD_HINT}")
    expected = request_key(provider, model, messages, params)
    if key != expected:
        raise ReplayError(
            f"{where}: key {key[:12]} does not match the request's content ({expected[:12]}): the line was edited "
            f"or recorded with another key scheme; {RERECORD_HINT}"
        )
    return Recorded(key, provider, model, messages, params, response, ident)


class ReplayProvider:
    """Serves a recording; raises ``UnseenRequestError`` on any request it does not hold."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, model: str | None = None):
        self.path = Path(path)
        self.records = load_recording(self.path)
        if not self.records:
            raise ReplayError(f"recording {self.path} is empty; {RERECORD_HINT}")
        identities = sorted({(r.provider, r.model) for r in self.records.values()})
        if name is None and model is None:
            if len(identities) > 1:
                raise ReplayError(
                    f"recording {self.path} holds several providers/models {identities}; pass name= and model="
                )
            name, model = identities[0]
        elif name is None or model is None:
            raise ReplayError("pass both name= and model= (or neither, to take them from the recording)")
        self.name: str = name
        self.model: str = model
        identities_seen = {json.dumps(r.cache_identity, sort_keys=True) for r in self.records.values()}
        if len(identities_seen) > 1:
            raise ReplayError(f"recording {self.path} mixes cache identities (several model files?); {RERECORD_HINT}")
        self._cache_identity: dict[str, Any] | None = next(iter(self.records.values())).cache_identity
        self.served: dict[str, int] = {}
        self.misses: list[str] = []
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawCompletion:
        key = request_key(self.name, self.model, messages, params)
        rec = self.records.get(key)
        with self._lock:
            if rec is None:
                msg = (
                    f"replay: unseen request {key[:12]} ({self.name}/{self.model}, params {canonical_params(params)})"
                    f"; last user message: {last_user_message(messages)!r}. The recording {self.path} does not hold"
                    f" it{self._nearest(messages, params)}: {RERECORD_HINT}"
                )
                self.misses.append(msg)
                raise UnseenRequestError(msg)
            self.served[key] = self.served.get(key, 0) + 1
        return rec.response

    def _nearest(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any]) -> str:
        """What differs from a recorded request with the same last user message, if there is one."""
        last = last_user_message(messages, limit=10**9)
        for rec in self.records.values():
            if last_user_message(rec.messages, limit=10**9) != last:
                continue
            if canonical_params(params) != rec.params:
                return f" (recorded {rec.key[:12]} has the same user message but params {rec.params})"
            same = f" (recorded {rec.key[:12]} has the same user message but"
            if len(rec.messages) != len(messages):
                return f"{same} {len(rec.messages)} messages, not {len(messages)})"
            for i, (old, new) in enumerate(zip(rec.messages, messages, strict=True)):
                if dict(new) != old:
                    return (
                        f"{same} messages[{i}] ({old.get('role')}) differs: recorded"
                        f" {str(old.get('content'))[:80]!r}, now {str(new.get('content'))[:80]!r})"
                    )
            return f"{same} provider/model {rec.provider}/{rec.model})"
        return ""

    def cache_identity(self) -> dict[str, Any]:
        """The recorded provider's cache identity (model file hash, n_ctx, seed ...), without the model file."""
        return dict(self._cache_identity or {})

    def unused(self) -> list[str]:
        """Keys of recorded requests that were never asked for."""
        return [k for k in self.records if k not in self.served]

    def assert_complete(self, *, all_used: bool = False) -> None:
        """Raise if any request missed the recording (even one a caller caught), or, with ``all_used``,
        if a recorded request was never asked for (the code now makes fewer or other calls)."""
        if self.misses:
            raise UnseenRequestError(f"{len(self.misses)} unseen request(s); first: {self.misses[0]}")
        if all_used and (left := self.unused()):
            first = self.records[left[0]]
            raise ReplayError(
                f"{len(left)} recorded request(s) were never asked for, e.g. {left[0][:12]} with last user message"
                f" {last_user_message(first.messages)!r}; {RERECORD_HINT}"
            )
