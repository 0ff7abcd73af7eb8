"""``base_url`` normalisation (part of the cache key) and its refusals: credentials in the URL, a query or
fragment, plain http to a non-loopback host unless allowed."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from genepool.llm.scrub import scrub


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
