"""A local contract server for tests only: it imitates the Langfuse public API endpoints that the
Langfuse Python SDK v5 calls, on 127.0.0.1, so the real SDK can be exercised offline.

It is not Langfuse. It implements just enough of the contract to check what the SDK sends and to
answer in the shapes the SDK parses:

* GET  /api/public/v2/observations  -- field groups (``fields``), structured ``filter`` (string,
  stringObject and datetime conditions), ``limit`` (<= 1000) and base64 cursors;
* GET  /api/public/v3/scores        -- ``name``, ``traceId`` (comma list), ``limit`` (<= 100), cursors;
* POST /api/public/scores           -- a JSON array of scores, answered 202 {"message": "Accepted"};
* POST /api/public/v2/prompts       -- text or chat prompts, versions counted per name;
* POST /api/public/otel/v1/traces   -- OTLP protobuf (gzip or not), decoded with opentelemetry-proto;
  spans carrying ``langfuse.observation.type`` are also turned into observations that the GET
  endpoint then serves (a crude stand-in for Langfuse's ingestion).

Every request is recorded in ``requests``; requests without the expected Basic auth get 401.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROJECT_ID = "contract-project"

FIELD_GROUPS = {
    "core": ["id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type"],
    "basic": ["name", "level", "statusMessage", "version", "environment", "userId", "sessionId", "isRootObservation"],
    "time": ["completionStartTime", "createdAt", "updatedAt"],
    "io": ["input", "output"],
    "metadata": ["metadata"],
    "model": ["model", "internalModelId", "modelParameters"],
    "usage": ["usageDetails", "costDetails", "totalCost"],
    "prompt": ["promptId", "promptName", "promptVersion"],
    "metrics": ["latency", "timeToFirstToken"],
    "trace_context": ["tags", "release", "traceName"],
}


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _ns_to_iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _matches(obs: dict, cond: dict) -> bool:
    kind, col, op, value = cond["type"], cond["column"], cond["operator"], cond.get("value")
    if kind == "string":
        actual = obs.get(col)
        if op == "=":
            return actual == value
        raise ValueError(f"unsupported string operator {op!r}")
    if kind == "stringObject":
        actual = (obs.get(col) or {}).get(cond["key"])
        if op == "=":
            return actual == value
        raise ValueError(f"unsupported stringObject operator {op!r}")
    if kind == "datetime":
        actual, bound = _time(obs[col]), _time(value)
        return {">=": actual >= bound, ">": actual > bound, "<": actual < bound, "<=": actual <= bound}[op]
    raise ValueError(f"unsupported filter type {kind!r}")


class LangfuseContractServer:
    """Start with ``with LangfuseContractServer(public_key, secret_key) as server: ... server.url``."""

    def __init__(self, public_key: str, secret_key: str):
        self.public_key, self.secret_key = public_key, secret_key
        self.observations: list[dict] = []
        self.scores_v3: list[dict] = []  # served by GET /api/public/v3/scores
        self.posted_scores: list[dict] = []
        self.prompts: list[dict] = []
        self.spans: list[dict] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LangfuseContractServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def requests_to(self, method: str, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["method"] == method and r["path"] == path]

    # -- request handling ------------------------------------------------------------------
    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if h.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        expected = "Basic " + base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        record = {
            "method": method,
            "path": parts.path,
            "query": query,
            "content_type": h.headers.get("Content-Type"),
            "authorized": h.headers.get("Authorization") == expected,
            "body": raw,
        }
        with self.lock:
            self.requests.append(record)
        if not record["authorized"]:
            return self._reply(h, 401, {"message": "Invalid credentials"})
        try:
            route = (method, parts.path)
            if route == ("GET", "/api/public/v2/observations"):
                return self._observations(h, query)
            if route == ("GET", "/api/public/v3/scores"):
                return self._get_scores(h, query)
            if route == ("POST", "/api/public/scores"):
                return self._post_scores(h, json.loads(raw))
            if route == ("POST", "/api/public/v2/prompts"):
                return self._post_prompt(h, json.loads(raw))
            if route == ("POST", "/api/public/otel/v1/traces"):
                return self._otlp(h, raw)
            return self._reply(h, 404, {"message": f"no route {method} {parts.path} in the contract server"})
        except (ValueError, KeyError) as exc:
            return self._reply(h, 400, {"message": f"bad request: {exc}"})

    @staticmethod
    def _page(items: list, query: dict, max_limit: int, default: int) -> tuple[list, dict]:
        limit = int(query.get("limit", default))
        if not 1 <= limit <= max_limit:
            raise ValueError(f"limit must be between 1 and {max_limit}")
        offset = int(base64.urlsafe_b64decode(query["cursor"]).decode()) if query.get("cursor") else 0
        page = items[offset : offset + limit]
        meta = {}
        if offset + limit < len(items):
            meta["cursor"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
        return page, meta

    def _observations(self, h: BaseHTTPRequestHandler, query: dict) -> None:
        if query.get("parseIoAsJson") == "true":
            raise ValueError("parseIoAsJson is deprecated")
        groups = (query.get("fields") or "core,basic").split(",")
        unknown = [g for g in groups if g not in FIELD_GROUPS]
        if unknown:
            raise ValueError(f"unknown field groups {unknown}")
        keep = {f for g in ["core", *groups] for f in FIELD_GROUPS[g]}
        conditions = json.loads(query["filter"]) if query.get("filter") else []
        with self.lock:
            selected = [o for o in self.observations if all(_matches(o, c) for c in conditions)]
        selected.sort(key=lambda o: (o["startTime"], o["id"]))
        page, meta = self._page(selected, query, 1000, 50)
        data = [{k: v for k, v in o.items() if k in keep} for o in page]
        self._reply(h, 200, {"data": data, "meta": meta})

    def _get_scores(self, h: BaseHTTPRequestHandler, query: dict) -> None:
        names = set(query["name"].split(",")) if query.get("name") else None
        traces = set(query["traceId"].split(",")) if query.get("traceId") else None
        with self.lock:
            selected = [
                s
                for s in self.scores_v3
                if (names is None or s["name"] in names)
                and (
                    traces is None
                    or (s.get("subject") or {}).get("traceId", (s.get("subject") or {}).get("id")) in traces
                )
            ]
        page, meta = self._page(selected, query, 100, 50)
        meta["limit"] = int(query.get("limit", 50))  # GetScoresV3Meta requires it
        self._reply(h, 200, {"data": page, "meta": meta})

    def _post_scores(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        if not isinstance(body, list):
            raise ValueError("expected a JSON array of scores")
        for s in body:
            target = s.get("traceId") or s.get("sessionId") or s.get("datasetRunId")
            if "name" not in s or "value" not in s or not target:
                raise ValueError("each score needs name, value and traceId/sessionId/datasetRunId")
        with self.lock:
            self.posted_scores.extend(body)
        self._reply(h, 202, {"message": "Accepted"})

    def _post_prompt(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        kind = body.get("type", "text")
        if kind == "text" and not isinstance(body.get("prompt"), str):
            raise ValueError("text prompt needs a string prompt")
        if kind == "chat" and not isinstance(body.get("prompt"), list):
            raise ValueError("chat prompt needs a list of messages")
        with self.lock:
            version = 1 + sum(1 for p in self.prompts if p["name"] == body["name"])
            prompt = {
                "type": kind,
                "name": body["name"],
                "prompt": body["prompt"],
                "version": version,
                "config": body.get("config") or {},
                "labels": body.get("labels") or [],
                "tags": body.get("tags") or [],
                "commitMessage": body.get("commitMessage"),
            }
            self.prompts.append(prompt)
        self._reply(h, 201, prompt)

    def _otlp(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(raw)
        spans = []
        for rs in request.resource_spans:
            resource = {kv.key: _any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                scope = {kv.key: _any_value(kv.value) for kv in ss.scope.attributes}
                for span in ss.spans:
                    spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "start_ns": span.start_time_unix_nano,
                            "end_ns": span.end_time_unix_nano,
                            "status_code": span.status.code,
                            "attributes": {kv.key: _any_value(kv.value) for kv in span.attributes},
                            "resource": resource,
                            "scope": {"name": ss.scope.name, **scope},
                        }
                    )
        with self.lock:
            self.spans.extend(spans)
            self.observations.extend(
                self._as_observation(s) for s in spans if "langfuse.observation.type" in s["attributes"]
            )
        self._reply(h, 200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def experiment_layout_errors(self) -> list[str]:
        """What Langfuse's experiment view needs, checked on every span that names an experiment (the layout
        of the SDK's ``run_experiment``): one trace per item; per trace one root span ``experiment-item-run``
        and a child ``experiment-item-task``; every span carries the experiment id and the item id; the
        root names the task span as ``langfuse.experiment.item.root_observation_id``; environment
        ``sdk-experiment``. Returns one line per violation (empty = the layout holds)."""
        errors: list[str] = []
        by_trace: dict[str, list[dict]] = {}
        for sp in self.spans:
            if "langfuse.experiment.id" in sp["attributes"]:
                by_trace.setdefault(sp["trace_id"], []).append(sp)
        items: dict[tuple[str, str], str] = {}
        for trace, spans in by_trace.items():
            roots = [sp for sp in spans if sp["parent_span_id"] is None]
            if len(roots) != 1 or roots[0]["name"] != "experiment-item-run":
                errors.append(f"trace {trace}: root spans {[sp['name'] for sp in roots]}, want one experiment-item-run")
                continue
            root = roots[0]
            tasks = [sp for sp in spans if sp["name"] == "experiment-item-task"
                     and sp["parent_span_id"] == root["span_id"]]
            if len(tasks) != 1:
                errors.append(f"trace {trace}: {len(tasks)} experiment-item-task children of the root, want 1")
                continue
            ids = {sp["attributes"].get("langfuse.experiment.item.id") for sp in spans}
            exps = {sp["attributes"].get("langfuse.experiment.id") for sp in spans}
            if len(ids) != 1 or None in ids or len(exps) != 1:
                errors.append(f"trace {trace}: item ids {sorted(map(str, ids))}, experiments {sorted(map(str, exps))}")
                continue
            key = (exps.pop(), ids.pop())
            if key in items:
                errors.append(f"experiment {key[0]} item {key[1]}: in traces {items[key]} and {trace} (one per item)")
            items[key] = trace
            if root["attributes"].get("langfuse.experiment.item.root_observation_id") != tasks[0]["span_id"]:
                errors.append(f"trace {trace}: root does not name the task span as item.root_observation_id")
            envs = {sp["attributes"].get("langfuse.environment") for sp in spans}
            if envs != {"sdk-experiment"}:
                errors.append(f"trace {trace}: environment {sorted(map(str, envs))}, want sdk-experiment")
        return errors

    @staticmethod
    def _as_observation(span: dict) -> dict:
        a = span["attributes"]
        prefix = "langfuse.observation.metadata."
        metadata = {k[len(prefix) :]: json.loads(v) for k, v in a.items() if k.startswith(prefix)}
        usage_key = "langfuse.observation.usage_details"
        usage = json.loads(a[usage_key]) if usage_key in a else None
        cost = json.loads(a["langfuse.observation.cost_details"]) if "langfuse.observation.cost_details" in a else None
        return {
            "id": span["span_id"],
            "traceId": span["trace_id"],
            "startTime": _ns_to_iso(span["start_ns"]),
            "endTime": _ns_to_iso(span["end_ns"]),
            "projectId": PROJECT_ID,
            "parentObservationId": span["parent_span_id"],
            "type": a["langfuse.observation.type"].upper(),
            "name": span["name"],
            "level": a.get("langfuse.observation.level", "DEFAULT"),
            "statusMessage": a.get("langfuse.observation.status_message"),
            "input": a.get("langfuse.observation.input"),
            "output": a.get("langfuse.observation.output"),
            "metadata": metadata,
            "model": a.get("langfuse.observation.model.name"),
            "usageDetails": usage,
            "costDetails": cost,
            "totalCost": (cost or {}).get("total"),
            "promptName": a.get("langfuse.observation.prompt.name"),
            "promptVersion": a.get("langfuse.observation.prompt.version"),
            "latency": (span["end_ns"] - span["start_ns"]) / 1e9,
        }
