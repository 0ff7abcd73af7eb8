"""Import OpenTelemetry GenAI spans (OTLP JSON export) as trace rows.

Input: an OTLP/JSON ``ExportTraceServiceRequest`` (``{"resourceSpans": [{"resource": ...,
"scopeSpans": [{"scope": ..., "spans": [...]}]}]}``), a list of them, a JSON-lines file of them
(what the collector's file exporter writes), a JSON string, or a path to any of these.

Which spans become rows: model calls, i.e. spans whose ``gen_ai.operation.name`` is ``chat``,
``text_completion`` or ``generate_content``, or that have no operation name but a
``gen_ai.request.model`` / ``gen_ai.provider.name`` / ``gen_ai.system``. ``execute_tool`` spans
are attached as ``tool_calls`` to the model call of the same trace that started last before
them. Other spans (``invoke_agent``, ``embeddings``, plain spans) are context, not rows.

Mapping (GenAI semantic conventions, current and deprecated forms):

* input: text of the last user message of ``gen_ai.input.messages`` (parts of type text), else
  ``gen_ai.prompt`` (a JSON message list or plain text), else indexed ``gen_ai.prompt.N.*``,
  else span events ``gen_ai.user.message`` / ``gen_ai.content.prompt`` /
  ``gen_ai.client.inference.operation.details``; system instructions go to metadata;
* output: assistant text of ``gen_ai.output.messages``, else ``gen_ai.completion`` (same forms),
  else events ``gen_ai.choice`` / ``gen_ai.content.completion``; tool_call parts -> tool_calls;
* prompt_tokens / completion_tokens: ``gen_ai.usage.input_tokens`` / ``output_tokens`` (or the
  deprecated ``prompt_tokens`` / ``completion_tokens``); cost_usd: ``gen_ai.usage.cost`` or 0;
* latency_ms: end - start; error: status code ERROR (message, else ``error.type``) or an
  ``error.type`` attribute;
* success: ``genepool.success`` attribute, else a ``gen_ai.evaluation.result`` event named
  ``success`` (score >= 0.5 or label true/pass/correct), else "no error" (metadata.success_source
  says which);
* id: the span id (hex) -- the same id Langfuse gives an OTel-ingested span, so importing a span
  from both sources stores it once; ``genepool.prompt_id``, ``genepool.prompt_version``,
  ``genepool.item_id``, ``genepool.expected``, ``genepool.partition_key`` and
  ``genepool.checker_message`` attributes fill the matching columns.

Spans that cannot be mapped (e.g. a non-numeric timestamp) and rows that fail the trace schema
are returned as quarantine records with their reason, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from genepool.core.trace_schema import empty_traces, json_safe, validate_traces
from genepool.validation import read_text_file, utf8_problem

MAX_OTEL_FILE_BYTES = 200_000_000

LLM_OPERATIONS = {"chat", "text_completion", "generate_content"}
SOURCE = "otel"
_ERROR_CODES = {2, "2", "STATUS_CODE_ERROR", "ERROR"}


class OtelImportError(ValueError):
    """The input is not an OTLP JSON trace export; the message says what was expected."""


# ---------------------------------------------------------------------------------------------
# Reading OTLP JSON


def any_value(v: Any) -> Any:
    """Python value of an OTLP JSON AnyValue ({"stringValue": ...}, {"intValue": "12"}, ...)."""
    if not isinstance(v, Mapping):
        return v
    for key in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])  # int64 is a JSON string in OTLP/JSON
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: any_value(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values", [])}
    return None


def attributes(items: Any) -> dict[str, Any]:
    """An OTLP attribute list [{key, value}] as a dict."""
    if not items:
        return {}
    if isinstance(items, Mapping):  # tolerate already-flattened attributes
        return dict(items)
    return {kv["key"]: any_value(kv.get("value")) for kv in items}


def _load(path_or_obj: Any) -> list[dict]:
    obj = path_or_obj
    if isinstance(obj, Path) or (isinstance(obj, str) and not obj.lstrip().startswith(("{", "["))):
        path = Path(obj)
        if not path.is_file():  # also refuses devices and FIFOs (/dev/zero would never end)
            raise OtelImportError(f"{path}: no such file; pass an OTLP JSON export file, a dict or a JSON string")
        text, problem = read_text_file(path, MAX_OTEL_FILE_BYTES)
        if problem:
            raise OtelImportError(f"{path}: {problem}")
        obj = text
    if isinstance(obj, (bytes, bytearray)):
        problem = utf8_problem(bytes(obj))
        if problem:
            raise OtelImportError(f"OTLP JSON: {problem}")
        obj = bytes(obj).decode("utf-8")
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError:
            try:  # JSON lines: one ExportTraceServiceRequest per line
                obj = [json.loads(line) for line in obj.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise OtelImportError(f"not JSON or JSON lines: {exc}") from exc
            except RecursionError:
                raise OtelImportError("JSON nested too deeply; pass an OTLP/JSON export") from None
        except RecursionError:
            raise OtelImportError("JSON nested too deeply; pass an OTLP/JSON export") from None
    requests = obj if isinstance(obj, list) else [obj]
    for i, req in enumerate(requests):
        if not isinstance(req, Mapping) or "resourceSpans" not in req:
            raise OtelImportError(
                f"item {i} has no 'resourceSpans'; expected an OTLP/JSON ExportTraceServiceRequest "
                "like {'resourceSpans': [{'resource': ..., 'scopeSpans': [{'spans': [...]}]}]}"
            )
    return list(requests)


def iter_spans(requests: Sequence[Mapping[str, Any]]):
    """Yield (resource attributes, scope name, span dict) for every span."""
    for req in requests:
        for rs in req.get("resourceSpans") or []:
            resource = attributes((rs.get("resource") or {}).get("attributes"))
            for ss in (rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []):
                scope = (ss.get("scope") or ss.get("instrumentationLibrary") or {}).get("name")
                for span in ss.get("spans") or []:
                    yield resource, scope, span


# ---------------------------------------------------------------------------------------------
# GenAI content


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _message_text(msg: Mapping[str, Any]) -> str:
    parts = msg.get("parts")
    if isinstance(parts, list):
        texts = [str(p.get("content", "")) for p in parts if isinstance(p, Mapping) and p.get("type", "text") == "text"]
        return "\n".join(t for t in texts if t)
    content = msg.get("content")
    if isinstance(content, list):  # OpenAI-style content parts
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, Mapping))
    return "" if content is None else str(content)


def _message_tool_calls(msg: Mapping[str, Any]) -> list[dict]:
    calls = []
    for p in msg.get("parts") or []:
        if isinstance(p, Mapping) and p.get("type") == "tool_call":
            calls.append({"id": p.get("id"), "name": p.get("name"), "arguments": _maybe_json(p.get("arguments"))})
    for c in msg.get("tool_calls") or []:
        if isinstance(c, Mapping):
            fn = c.get("function") or {}
            calls.append({"id": c.get("id"), "name": fn.get("name"), "arguments": _maybe_json(fn.get("arguments"))})
    return calls


def _messages(value: Any) -> list[dict] | None:
    value = _maybe_json(value)
    if isinstance(value, Mapping) and "role" in value:
        return [dict(value)]
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        # output messages may be choices: {"message": {...}} or messages with role
        return [dict(m.get("message", m)) for m in value]
    return None


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict] | None:
    msgs: dict[int, dict] = {}
    for k, v in attrs.items():
        if k.startswith(prefix + "."):
            idx, _, field = k[len(prefix) + 1 :].partition(".")
            if idx.isdigit() and field:
                msgs.setdefault(int(idx), {})[field] = v
    return [msgs[i] for i in sorted(msgs)] or None


def _events_by_name(span: Mapping[str, Any]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ev in span.get("events") or []:
        out.setdefault(ev.get("name", ""), []).append(attributes(ev.get("attributes")))
    return out


def _content_of_event(attrs: Mapping[str, Any]) -> Any:
    for key in ("content", "gen_ai.event.content", "message", "body"):
        if key in attrs:
            v = _maybe_json(attrs[key])
            if isinstance(v, Mapping):
                return v.get("content", v.get("message", json.dumps(v)))
            return v
    return None


def _extract_io(attrs: Mapping[str, Any], events: Mapping[str, list[dict]]) -> dict[str, Any]:
    details = {}
    for ev in events.get("gen_ai.client.inference.operation.details", []):
        details.update(ev)
    merged = {**details, **attrs}

    in_msgs = _messages(merged.get("gen_ai.input.messages"))
    out_msgs = _messages(merged.get("gen_ai.output.messages"))
    system = _maybe_json(merged.get("gen_ai.system_instructions"))
    user_input: str | None = None
    output: str | None = None
    tool_calls: list[dict] = []

    if in_msgs is None and "gen_ai.prompt" in merged:
        in_msgs = _messages(merged["gen_ai.prompt"])
        if in_msgs is None:
            user_input = str(merged["gen_ai.prompt"])
    if out_msgs is None and "gen_ai.completion" in merged:
        out_msgs = _messages(merged["gen_ai.completion"])
        if out_msgs is None:
            output = str(merged["gen_ai.completion"])
    if in_msgs is None and user_input is None:
        in_msgs = _indexed(merged, "gen_ai.prompt")
    if out_msgs is None and output is None:
        out_msgs = _indexed(merged, "gen_ai.completion")

    # span events (older conventions)
    if in_msgs is None and user_input is None:
        ev_msgs = [{"role": "system", "content": _content_of_event(e)} for e in events.get("gen_ai.system.message", [])]
        ev_msgs += [{"role": "user", "content": _content_of_event(e)} for e in events.get("gen_ai.user.message", [])]
        for e in events.get("gen_ai.content.prompt", []):
            ev_msgs += _messages(e.get("gen_ai.prompt")) or [{"role": "user", "content": e.get("gen_ai.prompt")}]
        in_msgs = ev_msgs or None
    if out_msgs is None and output is None:
        ev_out = [{"role": "assistant", "content": _content_of_event(e)} for e in events.get("gen_ai.choice", [])]
        for e in events.get("gen_ai.content.completion", []):
            completion = e.get("gen_ai.completion")
            ev_out += _messages(completion) or [{"role": "assistant", "content": completion}]
        out_msgs = ev_out or None

    if in_msgs is not None:
        users = [m for m in in_msgs if m.get("role") == "user"]
        user_input = _message_text(users[-1]) if users else (_message_text(in_msgs[-1]) if in_msgs else None)
        if system is None:
            systems = [_message_text(m) for m in in_msgs if m.get("role") == "system"]
            system = "\n".join(systems) if systems else None
    if out_msgs is not None:
        assistant = [m for m in out_msgs if m.get("role", "assistant") == "assistant"]
        output = "\n".join(t for t in (_message_text(m) for m in assistant) if t)
        for m in assistant:
            tool_calls += _message_tool_calls(m)
    if isinstance(system, list):
        system = "\n".join(_message_text(p) if isinstance(p, Mapping) else str(p) for p in system)
    return {"input": user_input, "output": output, "system": system, "tool_calls": tool_calls}


def _success(attrs: Mapping[str, Any], events: Mapping[str, list[dict]], error: str | None) -> tuple[bool, str]:
    v = attrs.get("genepool.success")
    if isinstance(v, bool):
        return v, "attribute"
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true", "attribute"
    for ev in events.get("gen_ai.evaluation.result", []):
        if ev.get("gen_ai.evaluation.name") != "success":
            continue
        score = ev.get("gen_ai.evaluation.score.value")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            return float(score) >= 0.5, "evaluation"
        label = str(ev.get("gen_ai.evaluation.score.label", "")).lower()
        if label in ("true", "pass", "passed", "correct", "success"):
            return True, "evaluation"
        if label in ("false", "fail", "failed", "incorrect", "failure"):
            return False, "evaluation"
    return error is None, "status"


def _is_llm_span(attrs: Mapping[str, Any]) -> bool:
    op = attrs.get("gen_ai.operation.name")
    if op is not None:
        return op in LLM_OPERATIONS
    return any(k in attrs for k in ("gen_ai.request.model", "gen_ai.provider.name", "gen_ai.system"))


def span_to_row(span: Mapping[str, Any], resource: Mapping[str, Any], agent_type: str) -> dict[str, Any]:
    """One GenAI model-call span as a trace row (see the module docstring)."""
    attrs = attributes(span.get("attributes"))
    events = _events_by_name(span)
    io = _extract_io(attrs, events)
    start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    status = span.get("status") or {}
    error = None
    if status.get("code") in _ERROR_CODES:
        error = status.get("message") or attrs.get("error.type") or "error"
    elif attrs.get("error.type"):
        error = str(attrs["error.type"])
    success, success_source = _success(attrs, events, error)

    def g(key: str) -> Any:
        v = attrs.get(key)
        return None if v is None else str(v)

    return {
        "id": span.get("spanId") or None,
        "agent_type": agent_type,
        "prompt_id": g("genepool.prompt_id"),
        "prompt_version": g("genepool.prompt_version"),
        "partition_key": g("genepool.partition_key"),
        "source": SOURCE,
        "item_id": g("genepool.item_id"),
        "input": io["input"],
        "output": io["output"] if io["output"] is not None else "",
        "expected": g("genepool.expected"),
        "success": success,
        "checker_message": g("genepool.checker_message") or "",
        "prompt_tokens": attrs.get("gen_ai.usage.input_tokens", attrs.get("gen_ai.usage.prompt_tokens", 0)),
        "completion_tokens": attrs.get("gen_ai.usage.output_tokens", attrs.get("gen_ai.usage.completion_tokens", 0)),
        "cost_usd": attrs.get("gen_ai.usage.cost", 0.0),
        "latency_ms": (end - start) / 1e6,
        "tool_calls": io["tool_calls"],
        "error": error,
        "metadata": {
            "otel": {
                "trace_id": span.get("traceId"),
                "span_id": span.get("spanId"),
                "parent_span_id": span.get("parentSpanId") or None,
                "name": span.get("name"),
                "operation": attrs.get("gen_ai.operation.name"),
                "provider": attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system"),
                "request_model": attrs.get("gen_ai.request.model"),
                "response_model": attrs.get("gen_ai.response.model"),
                "finish_reasons": attrs.get("gen_ai.response.finish_reasons"),
                "service_name": resource.get("service.name"),
                "start_time_unix_nano": str(start),
            },
            "system_instructions": io["system"],
            "success_source": success_source,
        },
    }


def _tool_call(span: Mapping[str, Any], attrs: Mapping[str, Any]) -> dict[str, Any]:
    status = span.get("status") or {}
    return {
        "id": attrs.get("gen_ai.tool.call.id"),
        "name": attrs.get("gen_ai.tool.name") or span.get("name"),
        "arguments": _maybe_json(attrs.get("gen_ai.tool.call.arguments")),
        "result": _maybe_json(attrs.get("gen_ai.tool.call.result")),
        "error": (status.get("message") or "error") if status.get("code") in _ERROR_CODES else None,
        "span_id": span.get("spanId"),
    }


def import_otel_genai(path_or_obj: Any, agent_type: str) -> tuple[pd.DataFrame, list[dict]]:
    """OTLP JSON GenAI spans as (valid trace rows, quarantine records); see the module docstring."""
    if not isinstance(agent_type, str) or not agent_type.strip():
        raise ValueError("agent_type must be a non-empty string, e.g. 'support-desk'")
    requests = _load(path_or_obj)
    rows: list[dict] = []
    bad: list[dict] = []
    tools: list[tuple[str, int, dict]] = []
    for resource, _scope, span in iter_spans(requests):
        try:
            attrs = attributes(span.get("attributes"))
            if attrs.get("gen_ai.operation.name") == "execute_tool":
                tools.append((span.get("traceId"), int(span.get("startTimeUnixNano") or 0), _tool_call(span, attrs)))
            elif _is_llm_span(attrs):
                rows.append(span_to_row(span, resource, agent_type))
        except Exception as exc:  # a broken span is quarantined with the reason
            bad.append(
                {
                    "raw": json_safe(dict(span)) if isinstance(span, Mapping) else {"value": json_safe(span)},
                    "reason": f"span: cannot be read ({type(exc).__name__}: {exc})",
                }
            )

    # attach each tool execution to the model call of its trace that started last before it
    for trace_id, start, call in tools:
        candidates = [
            r for r in rows
            if r["metadata"]["otel"]["trace_id"] == trace_id
            and int(r["metadata"]["otel"]["start_time_unix_nano"]) <= start
        ]
        if candidates:
            owner = max(candidates, key=lambda r: int(r["metadata"]["otel"]["start_time_unix_nano"]))
            existing = [c for c in owner["tool_calls"] if c.get("id") and c.get("id") == call.get("id")]
            if existing:
                existing[0].update({k: v for k, v in call.items() if v is not None})
            else:
                owner["tool_calls"].append(call)

    if not rows:
        return empty_traces(), bad
    valid, rejected = validate_traces(pd.DataFrame(rows))
    return valid, bad + rejected
