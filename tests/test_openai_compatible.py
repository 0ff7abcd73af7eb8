"""OpenAICompatibleProvider against a real ``python -m llama_cpp.server`` on 127.0.0.1.

The server runs the same SmolLM2-135M-Instruct GGUF as the in-process provider and is started with
``--api_key``, so a request only succeeds if the key really travels as ``Authorization: Bearer``.
Its uvicorn access log is captured to a file: counting ``POST /v1/chat/completions`` lines proves
whether a request reached the server or was served from genepool's PostgreSQL cache.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from genepool.llm import LLMClient, LLMError, OpenAICompatibleProvider, smollm2_path

KEY_ENV = "GENEPOOL_TEST_KEY"
SECRET = "sk-genepool-test-3f9a1c7e55d2"  # a throwaway key only this test's server accepts
MODEL_ALIAS = "smollm2-135m"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """A real llama_cpp.server subprocess; ``requests()`` counts chat requests in its access log."""

    def __init__(self, port: int, log_path: Path, proc: subprocess.Popen):
        self.port = port
        self.log_path = log_path
        self.proc = proc
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def requests(self) -> int:
        return self.log_path.read_text(errors="replace").count("POST /v1/chat/completions")


def start_llama_server(log_path: Path, api_key: str | None, timeout_s: float = 60.0) -> LlamaServer:
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_path()), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2", "--seed", "0",
    ]  # fmt: skip
    if api_key:
        cmd += ["--api_key", api_key]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LlamaServer(port, log_path, proc)
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            req = urllib.request.Request(f"{server.base_url}/models", headers=headers)
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_llama_server(server)
    raise RuntimeError(f"llama_cpp.server not ready on port {port} within {timeout_s}s")


def stop_llama_server(server: LlamaServer) -> None:
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    server = start_llama_server(tmp_path_factory.mktemp("llama") / "server.log", api_key=SECRET)
    yield server
    stop_llama_server(server)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def provider(server: LlamaServer, timeout_s: float = 60.0, max_retries: int = 4) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(server.base_url, MODEL_ALIAS, api_key_env=KEY_ENV, timeout_s=timeout_s,
                                    max_retries=max_retries, backoff_s=0.1)


MESSAGES = [
    {"role": "system", "content": "You answer with one word."},
    {"role": "user", "content": "What colour is the sky on a clear day?"},
]
PARAMS = {"temperature": 0.0, "max_tokens": 8}


def test_answer_usage_and_cache(llama_server, api_key, db):
    client = LLMClient(provider(llama_server), db)
    before = llama_server.requests()

    first = client.chat(MESSAGES, PARAMS, purpose="test", partition_key="support-desk/g0001")
    assert first.text.strip(), "the server returned an empty answer"
    assert first.prompt_tokens > 0 and first.completion_tokens > 0
    assert first.cached is False
    assert llama_server.requests() == before + 1

    second = client.chat(MESSAGES, PARAMS, purpose="test", partition_key="support-desk/g0001")
    assert second.cached is True
    assert (second.text, second.prompt_tokens, second.completion_tokens) == (
        first.text, first.prompt_tokens, first.completion_tokens,
    )  # fmt: skip
    assert second.request_hash == first.request_hash
    assert llama_server.requests() == before + 1, "the cached request must not reach the server"
    assert (client.calls_made, client.calls_cached) == (1, 1)

    rows = db.fetchall(
        "SELECT cached, prompt_tokens, provider, model FROM genepool.llm_calls WHERE request_hash = %s ORDER BY id",
        (first.request_hash,),
    )
    assert [r["cached"] for r in rows] == [False, True]
    assert all(r["provider"] == "openai_compatible" and r["model"] == MODEL_ALIAS for r in rows)

    # A different request is not confused with the cached one.
    third = client.chat(MESSAGES, {**PARAMS, "max_tokens": 9})
    assert third.cached is False and third.request_hash != first.request_hash
    assert llama_server.requests() == before + 2


def test_cache_survives_a_stopped_server(tmp_path, api_key, db):
    """Stop the server, then repeat: the answer comes from PostgreSQL, a new request fails."""
    server = start_llama_server(tmp_path / "server.log", api_key=SECRET)
    try:
        client = LLMClient(provider(server, timeout_s=5), db)
        first = client.chat(MESSAGES, PARAMS)
    finally:
        stop_llama_server(server)
    assert server.proc.poll() is not None
    again = LLMClient(provider(server, timeout_s=5), db).chat(MESSAGES, PARAMS)
    assert again.cached is True and again.text == first.text
    with pytest.raises(LLMError, match=r"cannot reach .* after 2 attempts"):
        LLMClient(provider(server, timeout_s=5, max_retries=1), db).chat(MESSAGES, {**PARAMS, "max_tokens": 5})


def test_key_sent_as_bearer_but_never_stored(llama_server, api_key, db, monkeypatch):
    client = LLMClient(provider(llama_server), db)
    comp = client.chat(MESSAGES, {**PARAMS, "max_tokens": 6}, purpose="key-check")
    assert comp.text.strip()

    # The server was started with --api_key: without the header (or with a wrong key) it refuses.
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMError, match="HTTP 401"):
        LLMClient(provider(llama_server)).chat(MESSAGES, {**PARAMS, "max_tokens": 7})
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(LLMError, match="HTTP 401") as err:
        LLMClient(provider(llama_server)).chat(MESSAGES, {**PARAMS, "max_tokens": 7})
    assert "sk-wrong" not in str(err.value)

    # Grep every row of the cache and the call log, as text, for the key.
    for table in ("llm_cache", "llm_calls"):
        rows = db.fetchall(f"SELECT row_to_json(t)::text AS j FROM genepool.{table} t")
        assert rows, f"{table} should hold the call just made"
        for row in rows:
            assert SECRET not in row["j"] and "Bearer" not in row["j"], f"key leaked into genepool.{table}"
    cached = db.fetchone("SELECT request FROM genepool.llm_cache WHERE request_hash = %s", (comp.request_hash,))
    assert set(cached["request"]) == {"messages", "params", "identity"}
    assert cached["request"]["identity"]["base_url"] == llama_server.base_url
    assert json.dumps(cached["request"]).find(SECRET) == -1


def test_wrong_port_fails_fast_with_clear_message(api_key, db):
    port = free_port()  # nothing listens here
    client = LLMClient(OpenAICompatibleProvider(f"http://127.0.0.1:{port}/v1", MODEL_ALIAS, KEY_ENV, timeout_s=3,
                                                max_retries=1, backoff_s=0.05), db)
    with pytest.raises(LLMError) as err:
        client.chat(MESSAGES, PARAMS)
    msg = str(err.value)
    assert f"cannot reach http://127.0.0.1:{port}/v1 after 2 attempts" in msg and "ConnectError" in msg
    assert SECRET not in msg
    # A failed call is neither cached nor logged as a completion.
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_cache")["n"] == 0
    assert db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls")["n"] == 0


def test_bad_base_url_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        OpenAICompatibleProvider("127.0.0.1:8000/v1", MODEL_ALIAS)


def test_concurrent_calls_give_the_sequential_answers_in_order(llama_server, api_key, db, fresh_database_url):
    """chat_many at llm_concurrency 2 against the real server: the answers, in submission order, are those
    of one-by-one calls on another database (greedy decoding is deterministic); a re-run sends nothing."""
    from genepool.db import Database, migrate

    questions = ["Name a colour.", "Name an animal.", "Name a fruit."]
    reqs = [([{"role": "user", "content": q}], {**PARAMS, "max_tokens": 5}) for q in questions]
    before = llama_server.requests()
    together = LLMClient(provider(llama_server), db, concurrency=2).chat_many(reqs)
    assert llama_server.requests() == before + 3
    other = fresh_database_url("seq")
    migrate(other)
    alone = [LLMClient(provider(llama_server), Database(other)).chat(m, p) for m, p in reqs]
    assert [c.text for c in together] == [c.text for c in alone]
    assert all(c.text.strip() for c in together)
    again = LLMClient(provider(llama_server), db, concurrency=2).chat_many(reqs)
    assert all(c.cached for c in again) and llama_server.requests() == before + 6
