"""The LLM cache key is pinned: ``genepool.llm_cache`` rows and replayed runs are found by ``request_hash``, so
any change to it (key order, separators, Unicode handling, parameter normalisation, the provider identity)
silently turns every cached answer into a miss. The expected hashes were computed with the single-module
``genepool/llm.py`` before it was split into the ``genepool.llm`` package."""

from __future__ import annotations

import logging
import socket

import pytest

from genepool.llm import LLMClient, LLMError, OpenAICompatibleProvider, normalise_params, request_hash

MESSAGES = [
    {"role": "system", "content": "Classify the ticket."},
    {"role": "user", "content": "Mon café — ne marche pas \u2603"},
]


def test_request_hash_with_a_local_model_identity_is_pinned():
    params = normalise_params({"temperature": 0.0, "max_tokens": 16, "stop": "\n", "seed": 7})
    assert params == {"temperature": 0.0, "max_tokens": 16, "stop": ["\n"], "seed": 7}
    identity = {"model_sha256": "ab" * 32, "n_ctx": 2048, "seed": 0, "llama_cpp": "0.3.2"}
    got = request_hash("llama_cpp", "SmolLM2-135M-Instruct-Q8_0.gguf", MESSAGES, params, identity)
    assert got == "611202c6af65a113c979c84b493c2545027f5bc008213bb96965abf73a72c8db"


def test_request_hash_without_identity_and_default_params_is_pinned():
    got = request_hash("stub", "m", [{"role": "user", "content": "hi"}], normalise_params({}))
    assert got == "567d01cd4ddaa83e312620ea3b033b37e63643f23a65ce30a9606e36dd9632a2"


def test_client_cache_key_of_an_openai_compatible_provider_is_pinned():
    """Through ``LLMClient.prepare``: validation, params defaults, and the normalised base_url/seed/n_ctx."""
    provider = OpenAICompatibleProvider("http://127.0.0.1:8000/v1/", "stub-model", seed=3, n_ctx=4096)
    got = LLMClient(provider).prepare(MESSAGES, {"max_tokens": 8}).hash
    assert got == "4b635f7451c25c7c7059de19eea06ac8e2fbf9fb352916b4932904e130b8bc96"


def test_retry_warnings_are_logged_under_the_genepool_llm_logger(caplog):
    with socket.socket() as s:  # a loopback port nobody listens on: every attempt is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = OpenAICompatibleProvider(
        f"http://127.0.0.1:{port}/v1", "m", "GENEPOOL_NO_SUCH_KEY", 5.0, max_retries=1, backoff_s=0.01,
        backoff_max_s=0.01,
    )
    with caplog.at_level(logging.WARNING, logger="genepool.llm"), pytest.raises(LLMError, match="cannot reach"):
        provider.complete([{"role": "user", "content": "hi"}], {"max_tokens": 1})
    retries = [r for r in caplog.records if "retry 1/1" in r.getMessage()]
    assert [r.name for r in retries] == ["genepool.llm"]
