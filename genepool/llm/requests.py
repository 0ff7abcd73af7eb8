"""Requests before any call: validation (one ``LLMInputError`` naming the field), canonical decoding
parameters, the cache key (``request_hash``), and answers made storable."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from genepool.llm.scrub import scrub
from genepool.llm.types import CHARS_PER_TOKEN_LIMIT, LLMInputError


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
