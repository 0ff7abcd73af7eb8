"""Secrets and hostile answers: a short, single-line, scrubbed excerpt of untrusted text."""

from __future__ import annotations

import re
from collections.abc import Sequence

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
