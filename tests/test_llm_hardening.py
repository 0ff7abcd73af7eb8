"""The OpenAI-compatible provider under faults and hostile answers, against a STUB server on 127.0.0.1
(tests/stub_llm_server.py, scripted responses), plus request validation and the cache key.

The real-path tests (python -m llama_cpp.server) are in test_openai_compatible.py.
"""

from __future__ import annotations

import logging

import pytest

from genepool.llm import (
    LlamaCppProvider,
    LLMClient,
    LLMError,
    LLMInputError,
    OpenAICompatibleProvider,
    normalise_base_url,
    scrub,
)
from tests.stub_llm_server import StubLLMServer, completion_body

KEY_ENV = "GENEPOOL_STUB_KEY"
SECRET = "sk-stubtest-7d1e0a9c44b2f6"
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hello"}]
PARAMS = {"temperature": 0.0, "max_tokens": 8}


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def fast_provider(base_url: str, **kw) -> OpenAICompatibleProvider:
    """Small timeouts and backoff so fault tests stay fast (the defaults are 120 s and 0.5 s)."""
    kw = {"timeout_s": 5.0, "max_retries": 3, "backoff_s": 0.02, "backoff_max_s": 0.1, **kw}
    return OpenAICompatibleProvider(base_url, "stub-model", KEY_ENV, **kw)


def count(db, table: str) -> int:
    return db.fetchone(f"SELECT count(*) AS n FROM genepool.{table}")["n"]


def schema_text(db) -> str:
    """Every row of every table in the genepool schema, as JSON text (a pg_dump-free grep)."""
    tables = db.fetchall("SELECT table_name FROM information_schema.tables WHERE table_schema = 'genepool'"
                         " AND table_type = 'BASE TABLE'")
    parts = []
    for t in tables:
        rows = db.fetchall(f'SELECT row_to_json(x)::text AS j FROM genepool."{t["table_name"]}" x')
        parts += [r["j"] for r in rows]
    return "\n".join(parts)


@pytest.mark.probe
def test_429_with_retry_after_is_retried_counted_and_cached_once(api_key, db, probe):
    script = [{"status": 429, "headers": {"Retry-After": "0.2"}, "body": {"error": "slow down"}}]
    with StubLLMServer(script=script) as stub:
        client = LLMClient(fast_provider(stub.base_url), db)
        comp = client.chat(MESSAGES, PARAMS, purpose="t")
        assert comp.text == "echo: hello" and comp.attempts == 2 and not comp.cached
        assert stub.chat_requests == 2
        assert (client.calls_made, client.retries) == (1, 1)
        again = LLMClient(fast_provider(stub.base_url), db).chat(MESSAGES, PARAMS)
        assert again.cached and again.text == comp.text
        assert stub.chat_requests == 2, "a cached answer must not reach the server"
    assert count(db, "llm_cache") == 1
    assert [r["attempts"] for r in db.fetchall("SELECT attempts FROM genepool.llm_calls ORDER BY id")] == [2, 0]
    assert all(r["headers"].get("Authorization") == f"Bearer {SECRET}" for r in stub.requests)
    probe("held: 429 + Retry-After retried once, answered, one cache row; re-run served from cache",
          new_llm_calls_on_resume=0)


def test_retry_after_is_capped(api_key, db):
    """A server asking to wait an hour is not obeyed for an hour: the wait is capped (here at 0.05 s)."""
    script = [{"status": 503, "headers": {"Retry-After": "3600"}}]
    with StubLLMServer(script=script) as stub:
        comp = LLMClient(fast_provider(stub.base_url, retry_after_max_s=0.05), db).chat(MESSAGES, PARAMS)
        assert comp.attempts == 2 and stub.chat_requests == 2


@pytest.mark.probe
def test_503_forever_gives_bounded_retries_then_one_clear_error(api_key, db, probe, caplog):
    with StubLLMServer(default={"status": 503, "body": "upstream overloaded"}) as stub:
        client = LLMClient(fast_provider(stub.base_url, max_retries=2), db)
        with caplog.at_level(logging.WARNING, logger="genepool.llm"), pytest.raises(LLMError) as err:
            client.chat(MESSAGES, PARAMS)
        assert stub.chat_requests == 3
    msg = str(err.value)
    assert "failed after 3 attempts" in msg and "HTTP 503" in msg and "\n" not in msg
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2
    assert count(db, "llm_cache") == 0 and count(db, "llm_calls") == 0
    probe("held: 503 forever -> 3 attempts with backoff, one-line LLMError, nothing cached")


@pytest.mark.probe
def test_hang_past_the_timeout_then_resume_repeats_no_answered_call(api_key, db, probe):
    other = [{"role": "user", "content": "second question"}]
    with StubLLMServer(script=[{}, {"hang": True}, {"hang": True}]) as stub:
        first = LLMClient(fast_provider(stub.base_url), db).chat(MESSAGES, PARAMS)
        client = LLMClient(fast_provider(stub.base_url, timeout_s=1.0, max_retries=1), db)
        with pytest.raises(LLMError, match=r"after 2 attempts .*no answer within the timeout of 1s"):
            client.chat(other, PARAMS)
        assert stub.chat_requests == 3
        assert count(db, "llm_cache") == 1
        # The server recovers; the same two calls again: only the unanswered one is sent.
        resumed = LLMClient(fast_provider(stub.base_url), db)
        r1, r2 = resumed.chat_many([(MESSAGES, PARAMS), (other, PARAMS)])
        assert r1.cached and r1.text == first.text and not r2.cached and r2.text == "echo: second question"
        assert stub.chat_requests == 4
    probe("held: hang past timeout -> bounded retries, clear error; resume repeated no answered call",
          new_llm_calls_on_resume=1)


@pytest.mark.probe
@pytest.mark.parametrize("status", [302, 307, 308])
def test_redirect_is_never_followed_and_the_key_never_reaches_the_other_port(api_key, db, probe, status):
    with StubLLMServer() as other, StubLLMServer() as stub:
        stub.script = [{"status": status, "headers": {"Location": f"{other.base_url}/chat/completions"}}]
        client = LLMClient(fast_provider(stub.base_url), db)
        with pytest.raises(LLMError) as err:
            client.chat(MESSAGES, PARAMS)
        assert other.requests == [], "the redirect was followed"
        assert stub.chat_requests == 1, "a redirect is not retried"
    msg = str(err.value)
    assert f"HTTP {status}" in msg and f"127.0.0.1:{other.port}" in msg and "never follows redirects" in msg
    assert SECRET not in msg
    assert count(db, "llm_cache") == 0 and count(db, "llm_calls") == 0
    probe(f"held: HTTP {status} not followed, no request (no key) to the other port, nothing cached")


MALFORMED = {
    "not json": b"<html>oops</html>",
    "json list": [1, 2],
    "no choices": {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    "content null": {**completion_body("x"), "choices": [{"message": {"role": "assistant", "content": None}}]},
    "content number": {**completion_body("x"), "choices": [{"message": {"content": 42}}]},
    "usage missing": {k: v for k, v in completion_body("x").items() if k != "usage"},
    "usage negative": {**completion_body("x"), "usage": {"prompt_tokens": -5, "completion_tokens": 1}},
    "usage string": {**completion_body("x"), "usage": {"prompt_tokens": "3", "completion_tokens": 1}},
    "usage bool": {**completion_body("x"), "usage": {"prompt_tokens": True, "completion_tokens": 1}},
    "empty body": b"",
}


@pytest.mark.probe
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_200_answer_is_an_error_and_never_cached(api_key, db, probe, case):
    with StubLLMServer(script=[{"status": 200, "body": MALFORMED[case]}]) as stub:
        client = LLMClient(fast_provider(stub.base_url), db)
        with pytest.raises(LLMError, match="HTTP 200") as err:
            client.chat(MESSAGES, PARAMS)
        assert stub.chat_requests == 1
        assert "nothing was cached" in str(err.value)
        assert count(db, "llm_cache") == 0 and count(db, "llm_calls") == 0
        # The next attempt (server fixed) calls again: nothing bad was cached.
        assert client.chat(MESSAGES, PARAMS).text == "echo: hello" and stub.chat_requests == 2
    probe(f"held: malformed 200 ({case}) refused, nothing cached; the re-run called again")


@pytest.mark.probe
def test_error_bodies_carrying_the_key_are_scrubbed_everywhere(api_key, db, probe, caplog):
    leak = f'{{"error": "invalid key {SECRET}", "echo": "Authorization: Bearer {SECRET}", "x": "{"A" * 500}"}}'
    script = [
        {"status": 500, "body": leak},
        {"status": 401, "body": leak},
        {"status": 200, "body": "not json " + SECRET},
        {"status": 400, "body": "token=abc123secretvalue and sk-otherkey123456 and Bearer eyJhbGciOi.x.y"},
    ]
    errors = []
    with StubLLMServer(script=script) as stub, caplog.at_level(logging.DEBUG):
        client = LLMClient(fast_provider(stub.base_url, max_retries=1), db)
        for _ in range(3):
            with pytest.raises(LLMError) as err:
                client.chat(MESSAGES, PARAMS)
            errors.append(str(err.value))
        client.chat(MESSAGES, PARAMS)  # the stub is fine again; a real row goes into the tables
    assert "HTTP 401" in errors[0] and "HTTP 400" in errors[2]
    for msg in errors:
        assert SECRET not in msg and "Bearer" not in msg and "A" * 200 not in msg
        assert len(msg) < 500
    assert "abc123secretvalue" not in errors[2] and "sk-otherkey123456" not in errors[2]
    assert "eyJhbGciOi" not in errors[2]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged and "Bearer" not in logged
    # Record the failures the way the run-failure sensor stores a failed step's error, then grep every row.
    for i, msg in enumerate(errors):
        db.execute("INSERT INTO genepool.run_failures (run_id, job_name, error, failed_at)"
                   " VALUES (%s, 'generation_job', %s, now())", (f"run-{i}", msg))
    text = schema_text(db)
    assert "invalid key" not in text or SECRET not in text
    assert SECRET not in text and "Bearer" not in text
    assert count(db, "llm_cache") == 1
    probe("held: a key echoed in 500/401/200/400 bodies is absent from errors, logs and every genepool table")


def test_scrub_removes_key_shapes_and_cuts_to_one_line():
    text = f"line1\nkey={SECRET}\x00 Authorization: Bearer abc.def api_key: 'zzz' " + "x" * 300
    out = scrub(text, secrets=[SECRET])
    assert SECRET not in out and "abc.def" not in out and "zzz" not in out
    assert "\n" not in out and "\x00" not in out and len(out) <= 123


def test_plain_http_to_a_remote_host_is_refused_unless_allowed(monkeypatch):
    monkeypatch.delenv("GENEPOOL_LLM_ALLOW_INSECURE_HTTP", raising=False)
    with pytest.raises(ValueError, match=r"plain http to a non-loopback host.*GENEPOOL_LLM_ALLOW_INSECURE_HTTP"):
        OpenAICompatibleProvider("http://llm.example.com/v1", "m")
    assert OpenAICompatibleProvider("http://llm.example.com/v1", "m", allow_insecure_http=True).base_url == (
        "http://llm.example.com/v1")
    monkeypatch.setenv("GENEPOOL_LLM_ALLOW_INSECURE_HTTP", "1")
    assert OpenAICompatibleProvider("http://llm.example.com/v1", "m").base_url == "http://llm.example.com/v1"
    monkeypatch.delenv("GENEPOOL_LLM_ALLOW_INSECURE_HTTP")
    for ok in ("https://llm.example.com/v1", "http://localhost:8000/v1", "http://127.0.0.5:1/v1",
               "http://[::1]:8000/v1"):
        OpenAICompatibleProvider(ok, "m")
    with pytest.raises(ValueError, match="credentials"):
        OpenAICompatibleProvider("https://user:pw@llm.example.com/v1", "m")
    with pytest.raises(ValueError, match="must start with http"):
        OpenAICompatibleProvider("ftp://llm.example.com/v1", "m")


def test_base_url_normalisation():
    assert normalise_base_url("HTTPS://API.Example.com:443/v1/") == "https://api.example.com/v1"
    assert normalise_base_url("http://127.0.0.1:80/v1") == "http://127.0.0.1/v1"
    assert normalise_base_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


# --- hostile requests --------------------------------------------------------------------------
@pytest.mark.probe
def test_nul_byte_in_an_input_is_refused_before_any_call_naming_the_field(api_key, db, probe):
    with StubLLMServer() as stub:
        client = LLMClient(fast_provider(stub.base_url), db)
        bad = [MESSAGES[0], {"role": "user", "content": "before\x00after"}]
        with pytest.raises(LLMInputError, match=r"messages\[1\]\.content contains a NUL byte at character 6"):
            client.chat(bad, PARAMS)
        with pytest.raises(LLMInputError, match=r"params\.stop\[0\]"):
            client.chat(MESSAGES, {**PARAMS, "stop": ["\x00"]})
        with pytest.raises(LLMInputError, match=r"messages\[1\]\.content has invalid Unicode"):
            client.chat([MESSAGES[0], {"role": "user", "content": "lone \ud800 surrogate"}], PARAMS)
        # In a batch, one bad request refuses the batch before any call.
        with pytest.raises(LLMInputError, match=r"messages\[1\]"):
            client.chat_many([(MESSAGES, PARAMS), (bad, PARAMS)])
        assert stub.chat_requests == 0
    assert count(db, "llm_cache") == 0 and count(db, "llm_calls") == 0
    probe("held: NUL / lone surrogate in an input refused before any call, naming the field")


@pytest.mark.probe
def test_nul_in_a_models_answer_is_stored_escaped_and_cached(api_key, db, probe):
    with StubLLMServer(script=[{"reply": "a\x00b\ud800c"}]) as stub:
        comp = LLMClient(fast_provider(stub.base_url), db).chat(MESSAGES, PARAMS)
        assert comp.text == "a\ufffdb?c"
        again = LLMClient(fast_provider(stub.base_url), db).chat(MESSAGES, PARAMS)
        assert again.cached and again.text == comp.text and stub.chat_requests == 1
    probe("held: NUL in an answer stored as U+FFFD; cache insert works, re-run pays nothing",
          new_llm_calls_on_resume=0)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"temperature": 99}, "temperature"), ({"temperature": float("nan")}, "temperature"),
     ({"max_tokens": -5}, "max_tokens"), ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
     ({"stop": 5}, "stop"), ({"seed": -1}, "seed")],
)
def test_bad_decoding_params_are_refused_naming_the_field(params, field):
    client = LLMClient(OpenAICompatibleProvider("http://127.0.0.1:9/v1", "m"), None)
    with pytest.raises(LLMInputError, match=rf"params\.{field}"):
        client.chat(MESSAGES, params)


def test_bad_messages_are_refused_naming_the_field():
    client = LLMClient(OpenAICompatibleProvider("http://127.0.0.1:9/v1", "m"), None)
    for bad, field in (([], "messages must be"), ([{"role": "tool", "content": "x"}], r"messages\[0\]\.role"),
                       ([{"role": "user", "content": 5}], r"messages\[0\]\.content"), ("hi", "messages must be")):
        with pytest.raises(LLMInputError, match=field):
            client.chat(bad, PARAMS)


@pytest.mark.probe
def test_a_50_mb_input_fails_fast_and_never_reaches_llama_cpp(monkeypatch, probe):
    provider = LlamaCppProvider(n_ctx=2048)

    def must_not_load(self):
        raise AssertionError("the model was asked to tokenise a 50 MB input")

    monkeypatch.setattr(LlamaCppProvider, "_llama", must_not_load)
    huge = [{"role": "user", "content": "x" * (50 * 1024 * 1024)}]
    with pytest.raises(LLMInputError, match=r"over 16384 characters .*messages\[0\]\.content alone has 52428800"):
        LLMClient(provider, None).chat(huge, PARAMS)
    with pytest.raises(LLMInputError, match="over the limit of 16384"):  # the provider's own guard
        provider.complete(huge, PARAMS)
    probe("held: 50 MB input refused before tokenising (limit 8 chars/token x n_ctx)")


# --- the cache key -----------------------------------------------------------------------------
@pytest.mark.probe
def test_cache_key_covers_base_url_model_seed_and_n_ctx(api_key, db, probe):
    with StubLLMServer() as stub:
        localhost = stub.base_url.replace("127.0.0.1", "localhost")
        variants = [
            fast_provider(stub.base_url),
            fast_provider(localhost),  # another base_url (may be another server)
            OpenAICompatibleProvider(stub.base_url, "other-model", KEY_ENV),
            fast_provider(stub.base_url, seed=1),
            fast_provider(stub.base_url, n_ctx=4096),
        ]
        hashes = [LLMClient(p, db).chat(MESSAGES, PARAMS).request_hash for p in variants]
        assert len(set(hashes)) == len(variants) and stub.chat_requests == len(variants)
        # The same server spelled differently (trailing slash, default-case host) is the same key.
        same = LLMClient(fast_provider(stub.base_url + "/"), db).chat(MESSAGES, PARAMS)
        assert same.cached and same.request_hash == hashes[0] and stub.chat_requests == len(variants)
        # Decoding params are part of the key; equal values in another spelling are not.
        assert LLMClient(fast_provider(stub.base_url), db).chat(MESSAGES, {"temperature": 0, "max_tokens": 8}).cached
        assert not LLMClient(fast_provider(stub.base_url), db).chat(MESSAGES, {**PARAMS, "max_tokens": 9}).cached
    probe("held: base_url, model, seed, n_ctx, decoding params each change the cache key")


def test_local_model_cache_key_covers_the_file_hash_n_ctx_and_seed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / "m.gguf").write_bytes(b"GGUF model one")
    (tmp_path / "b" / "m.gguf").write_bytes(b"GGUF model two")  # same name, other weights
    (tmp_path / "c" / "m.gguf").write_bytes(b"GGUF model one")  # same weights, other folder

    def key(path, **kw):
        return LLMClient(LlamaCppProvider(model_path=str(tmp_path / path / "m.gguf"), **kw), None).prepare(
            MESSAGES, PARAMS).hash

    base = key("a")
    assert key("b") != base
    assert key("c") == base
    assert key("a", n_ctx=4096) != base
    assert key("a", seed=7) != base
