"""Record/replay of model answers (genepool/replay.py).

Unit tests use ``ScriptedProvider``, a test double that answers from a dict. The committed recording
of one real SmolLM2 generation is replayed by tests/test_generation_replay.py.
"""

from __future__ import annotations

import json

import pytest

from genepool.llm import LLMClient, RawCompletion
from genepool.replay import (
    RecordingProvider,
    ReplayError,
    ReplayProvider,
    UnseenRequestError,
    load_recording,
    request_key,
)

PARAMS = {"temperature": 0.0, "max_tokens": 16, "stop": ["\n"]}


class ScriptedProvider:
    """Test double: answers each user message from a script and counts its calls."""

    name = "scripted"
    model = "script-1"
    max_prompt_chars = 10_000

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls = 0

    def cache_identity(self):
        return {"model_sha256": "ab" * 32, "seed": 0}

    def complete(self, messages, params):
        self.calls += 1
        text = self.answers[messages[-1]["content"]]
        return RawCompletion(
            text, prompt_tokens=len(messages[-1]["content"]), completion_tokens=len(text), latency_ms=12.5
        )


def _msgs(text: str, system: str = "Be brief.") -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def _record(path, answers=None, asks=("hi", "2+2?", "hi")):
    inner = ScriptedProvider(answers or {"hi": "hello", "2+2?": "4"})
    with RecordingProvider(inner, path) as rec:
        outs = [rec.complete(_msgs(a), PARAMS) for a in asks]
    return inner, rec, outs


def test_recording_then_replay_serves_the_same_answers_without_the_model(tmp_path):
    path = tmp_path / "rec.jsonl"
    inner, rec, outs = _record(path)
    assert inner.calls == 3 and rec.recorded == 2  # the repeated request is written once
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["messages"][-1]["content"] for x in lines] == ["hi", "2+2?"]
    assert lines[0]["provider"] == "scripted" and lines[0]["model"] == "script-1"
    assert lines[0]["params"] == PARAMS

    replay = ReplayProvider(path)
    assert (replay.name, replay.model) == ("scripted", "script-1")  # the identity the cache keys use
    assert replay.cache_identity() == {"model_sha256": "ab" * 32, "seed": 0}  # without the model file
    assert rec.max_prompt_chars == 10_000  # the recorder shows the inner provider's other attributes
    again = [replay.complete(_msgs(a), PARAMS) for a in ("hi", "2+2?", "hi")]
    assert again == outs
    assert replay.served == {lines[0]["key"]: 2, lines[1]["key"]: 1}
    replay.assert_complete(all_used=True)


def test_replay_raises_on_an_unseen_request_naming_hash_and_user_message(tmp_path):
    path = tmp_path / "rec.jsonl"
    _record(path)
    replay = ReplayProvider(path)
    long_question = "What is the capital of France? " * 20
    with pytest.raises(UnseenRequestError) as err:
        replay.complete(_msgs(long_question), PARAMS)
    msg = str(err.value)
    key = request_key("scripted", "script-1", _msgs(long_question), PARAMS)
    assert key[:12] in msg
    assert repr(long_question[:200]) in msg and long_question[:201] not in msg
    assert "make record" in msg


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m, p: (_msgs("hi", system="Be verbose."), p), "messages[0] (system) differs: recorded 'Be brief.'"),
        (lambda m, p: (m, {**p, "max_tokens": 17}), "same user message but params"),
        (lambda m, p: (m, {**p, "stop": []}), "same user message but params"),
        (lambda m, p: ([m[0], {"role": "assistant", "content": "x"}, m[1]], p), "2 messages, not 3"),
    ],
)
def test_any_change_of_messages_or_params_is_unseen_and_the_error_says_what_differs(tmp_path, change, says):
    path = tmp_path / "rec.jsonl"
    _record(path)
    replay = ReplayProvider(path)
    messages, params = change(_msgs("hi"), PARAMS)
    with pytest.raises(UnseenRequestError) as err:
        replay.complete(messages, params)
    assert says in str(err.value)


def test_a_miss_swallowed_by_the_caller_still_fails_assert_complete(tmp_path):
    path = tmp_path / "rec.jsonl"
    _record(path)
    replay = ReplayProvider(path)
    try:  # what a caller that tolerates model failures (reflection) does
        replay.complete(_msgs("never recorded"), PARAMS)
    except Exception:
        pass
    with pytest.raises(UnseenRequestError, match="1 unseen request"):
        replay.assert_complete()


def test_assert_complete_all_used_reports_requests_the_code_no_longer_makes(tmp_path):
    path = tmp_path / "rec.jsonl"
    _record(path)
    replay = ReplayProvider(path)
    replay.complete(_msgs("hi"), PARAMS)
    replay.assert_complete()  # no miss
    with pytest.raises(ReplayError, match=r"1 recorded request\(s\) were never asked for.*'2\+2\?'"):
        replay.assert_complete(all_used=True)


def test_the_provider_identity_is_part_of_the_key(tmp_path):
    path = tmp_path / "rec.jsonl"
    _record(path)
    replay = ReplayProvider(path, name="scripted", model="script-2")
    with pytest.raises(UnseenRequestError, match="scripted/script-2"):
        replay.complete(_msgs("hi"), PARAMS)


def test_through_llm_client_the_cache_keys_match_the_recorded_run(tmp_path, db):
    """A run replayed through LLMClient stores the same cache rows as the recorded run did."""
    path = tmp_path / "rec.jsonl"
    inner = ScriptedProvider({"hi": "hello", "2+2?": "4"})
    with RecordingProvider(inner, path) as rec:
        recorded = [LLMClient(rec, db=None).chat(_msgs(a), PARAMS) for a in ("hi", "2+2?")]
    client = LLMClient(ReplayProvider(path), db)
    replayed = [client.chat(_msgs(a), PARAMS) for a in ("hi", "2+2?")]
    assert [c.request_hash for c in replayed] == [c.request_hash for c in recorded]
    assert [c.text for c in replayed] == ["hello", "4"] and not any(c.cached for c in replayed)
    assert client.chat(_msgs("hi"), PARAMS).cached  # then served by the PostgreSQL cache as usual


def test_an_interrupted_recording_leaves_the_previous_file_untouched(tmp_path):
    path = tmp_path / "rec.jsonl"
    _record(path)
    before = path.read_text()
    inner = ScriptedProvider({"hi": "HELLO"})
    with pytest.raises(KeyError), RecordingProvider(inner, path) as rec:
        rec.complete(_msgs("hi"), PARAMS)
        rec.complete(_msgs("unknown to the script"), PARAMS)  # the model call fails mid-recording
    assert path.read_text() == before
    assert not (tmp_path / "rec.jsonl.partial").exists()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{not json\n", r"rec\.jsonl:1: not valid JSON"),
        ("[1, 2]\n", r"rec\.jsonl:1: a line must be a JSON object"),
        ('{"key": "x"}\n', r"rec\.jsonl:1: field 'provider' is missing"),
    ],
)
def test_a_malformed_recording_fails_with_file_and_line(tmp_path, content, error):
    path = tmp_path / "rec.jsonl"
    path.write_text(content)
    with pytest.raises(ReplayError, match=error):
        ReplayProvider(path)


def test_an_edited_line_is_refused(tmp_path):
    path = tmp_path / "rec.jsonl"
    _record(path)
    lines = path.read_text().splitlines()
    obj = json.loads(lines[1])
    obj["messages"][-1]["content"] = "3+3?"  # answer kept, request changed: the key no longer fits
    path.write_text(lines[0] + "\n" + json.dumps(obj) + "\n")
    with pytest.raises(ReplayError, match=r"rec\.jsonl:2: key .* does not match the request's content"):
        load_recording(path)
    obj["response"]["prompt_tokens"] = "12"
    path.write_text(json.dumps(obj) + "\n")
    with pytest.raises(ReplayError, match=r"rec\.jsonl:1 response: field 'prompt_tokens' has type str"):
        load_recording(path)


def test_missing_or_empty_recording(tmp_path):
    with pytest.raises(ReplayError, match=r"does not exist.*make record"):
        ReplayProvider(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ReplayError, match="is empty"):
        ReplayProvider(tmp_path / "empty.jsonl")
