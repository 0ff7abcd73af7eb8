"""OpenTelemetry GenAI import: a hand-written OTLP/JSON export (tests/data/otel_genai.json) with
current and deprecated GenAI conventions, a tool execution and two broken spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genepool.core.otel_import import OtelImportError, any_value, import_otel_genai
from genepool.core.trace_schema import TraceSchema, quarantine, store_traces

FIXTURE = Path(__file__).parent / "data" / "otel_genai.json"
AGENT = "support-desk"


@pytest.fixture(scope="module")
def imported():
    return import_otel_genai(FIXTURE, AGENT)


def test_model_call_spans_become_rows(imported):
    valid, _ = imported
    TraceSchema.validate(valid)
    # invoke_agent, execute_tool and embeddings spans are context, not rows
    assert valid["id"].tolist() == ["00f067aa0ba902b7", "c0ffee0ddba11001", "53995c3f42cd8ad8", "e457b5a2e4d86bd1"]
    assert set(valid["agent_type"]) == {AGENT} and set(valid["source"]) == {"otel"}


def test_current_conventions_messages_tools_and_evaluation(imported):
    rows = {r["id"]: r for r in imported[0].to_dict("records")}
    first = rows["00f067aa0ba902b7"]
    assert first["input"] == "Where is my order 1042?" and first["output"] == ""
    assert (first["prompt_tokens"], first["completion_tokens"], first["latency_ms"]) == (58, 17, 640.0)
    assert first["prompt_id"] == "pr_1a2b3c4d5e6f7a8b" and first["prompt_version"] == "1.3.0"
    assert first["item_id"] == "order-1042"
    # the model's tool_call part merged with the execute_tool span that ran it
    assert first["tool_calls"] == [
        {
            "id": "call_1",
            "name": "lookup_order",
            "arguments": {"order_id": 1042},
            "result": {"status": "shipped", "eta": "2026-11-04"},
            "span_id": "1f2e3d4c5b6a7980",
        }
    ]
    meta = first["metadata"]
    assert meta["system_instructions"] == "You are the support desk of Acme. Answer in one sentence."
    assert meta["otel"]["service_name"] == "support-desk-agent" and meta["otel"]["provider"] == "llama.cpp"
    assert meta["otel"]["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert meta["otel"]["finish_reasons"] == ["tool_calls"] and meta["success_source"] == "status"

    answer = rows["c0ffee0ddba11001"]
    assert answer["input"] == "Where is my order 1042?"  # last *user* message
    assert answer["output"] == "Your order 1042 has shipped and arrives on 4 November."
    assert answer["success"] is True and answer["metadata"]["success_source"] == "evaluation"
    assert answer["expected"] == "shipped" and answer["tool_calls"] == []


def test_deprecated_conventions_errors_and_events(imported):
    rows = {r["id"]: r for r in imported[0].to_dict("records")}
    failed = rows["53995c3f42cd8ad8"]
    assert failed["input"] == "Cancel my subscription" and failed["output"] == ""
    assert failed["error"] == "429 Too Many Requests" and failed["success"] is False
    assert (failed["prompt_tokens"], failed["completion_tokens"]) == (40, 0)
    assert failed["metadata"]["otel"]["provider"] == "openai"
    events = rows["e457b5a2e4d86bd1"]
    assert events["input"] == "Can I get a refund after 40 days?" and events["output"] == "Sure, anything is possible!"
    assert events["success"] is False and events["metadata"]["success_source"] == "attribute"
    assert events["checker_message"] == "expected a refund policy answer" and events["error"] is None


def test_broken_spans_are_quarantined_with_reasons(imported, db):
    valid, bad = imported
    reasons = {b["raw"].get("spanId") or b["raw"].get("id"): b["reason"] for b in bad}
    assert reasons == {
        "feedface00c0ffee": "span: cannot be read (ValueError: invalid literal for int() with base 10: "
        "'2026-11-02T10:00:09Z')",
        "dead00beef00cafe": "prompt_tokens: greater_than_or_equal_to(0) failed (value -12)",
    }
    # the negative-token span was still readable: its raw row shows the indexed prompt/completion
    neg = next(b["raw"] for b in bad if b["raw"].get("id") == "dead00beef00cafe")
    assert neg["input"] == "Reset my password" and neg["output"] == "Use the reset link."

    assert store_traces(db, valid, "support-desk/g0005") == 4
    assert quarantine(db, bad, "otel", "support-desk/g0005") == 2
    stored = db.fetchone("SELECT tool_calls, metadata FROM genepool.traces WHERE id = '00f067aa0ba902b7'")
    assert stored["tool_calls"][0]["name"] == "lookup_order"
    assert db.fetchone("SELECT count(*) AS n FROM genepool.trace_quarantine WHERE source = 'otel'")["n"] == 2


def test_accepts_dicts_json_strings_and_json_lines(tmp_path):
    doc = json.loads(FIXTURE.read_text())
    v1, q1 = import_otel_genai(doc, AGENT)
    v2, _ = import_otel_genai(json.dumps(doc), AGENT)
    lines = tmp_path / "spans.jsonl"
    one = {"resourceSpans": doc["resourceSpans"][:1]}
    two = {"resourceSpans": doc["resourceSpans"][1:]}
    lines.write_text(json.dumps(one) + "\n" + json.dumps(two) + "\n")
    v3, q3 = import_otel_genai(str(lines), AGENT)
    assert v1["id"].tolist() == v2["id"].tolist() == v3["id"].tolist()
    assert len(q1) == len(q3) == 2


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(OtelImportError, match="resourceSpans"):
        import_otel_genai({"spans": []}, AGENT)
    with pytest.raises(OtelImportError, match="no such file"):
        import_otel_genai(tmp_path / "missing.json", AGENT)
    with pytest.raises(ValueError, match="agent_type"):
        import_otel_genai(FIXTURE, "")
    empty, bad = import_otel_genai({"resourceSpans": []}, AGENT)
    assert empty.empty and bad == []


def test_any_value_decodes_otlp_json_values():
    assert any_value({"intValue": "42"}) == 42
    assert any_value({"arrayValue": {"values": [{"stringValue": "a"}, {"boolValue": True}]}}) == ["a", True]
    assert any_value({"kvlistValue": {"values": [{"key": "k", "value": {"doubleValue": 0.5}}]}}) == {"k": 0.5}
