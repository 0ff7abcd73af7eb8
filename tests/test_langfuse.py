"""Langfuse resource against the real SDK v5: a local contract server on 127.0.0.1 (see
tests/langfuse_contract_server.py) and an in-memory span exporter. No Langfuse server is involved."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import pytest
from langfuse import Langfuse
from langfuse._client.resource_manager import LangfuseResourceManager
from langfuse_contract_server import LangfuseContractServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from genepool.core.trace_schema import TraceSchema, store_traces
from genepool.langfuse_io import (
    LangfuseError,
    fetch_trace_rows,
    log_experiment_to,
)
from resources.langfuse import LangfuseResource

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

AGENT = "support-desk"
PK_ENV, SK_ENV = "GENEPOOL_TEST_LANGFUSE_PK", "GENEPOOL_TEST_LANGFUSE_SK"


@pytest.fixture
def keys(monkeypatch):
    """Fresh keys per test: the SDK keeps one client per public key in a process."""
    pk, sk = f"pk-lf-test-{uuid.uuid4().hex[:8]}", f"sk-lf-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(PK_ENV, pk)
    monkeypatch.setenv(SK_ENV, sk)
    yield pk, sk
    manager = LangfuseResourceManager._instances.pop(pk, None)
    if manager is not None:
        manager.shutdown()


@pytest.fixture
def server(keys):
    with LangfuseContractServer(*keys) as srv:
        yield srv


def _resource(server, **kw) -> LangfuseResource:
    return LangfuseResource(host=server.url, public_key_env=PK_ENV, secret_key_env=SK_ENV, timeout_s=5, **kw)


def _obs(id, *, trace="t" * 32, start="2026-11-02T10:00:00Z", prompt=AGENT, **kw):
    o = {
        "id": id,
        "traceId": trace,
        "startTime": start,
        "endTime": start,
        "projectId": "p",
        "type": "GENERATION",
        "name": "answer",
        "level": "DEFAULT",
        "input": f"question {id}",
        "output": f"answer {id}",
        "metadata": {},
        "model": "smollm2",
        "usageDetails": {"input": 20, "output": 4, "total": 24},
        "totalCost": 0.0001,
        "promptName": prompt,
        "promptVersion": 3,
        "latency": 0.25,
    }
    o.update(kw)
    return o


def _score(name, value, data_type, subject, ts="2026-11-02T10:05:00Z"):
    return {
        "id": uuid.uuid4().hex,
        "projectId": "p",
        "name": name,
        "value": value,
        "dataType": data_type,
        "source": "API",
        "timestamp": ts,
        "environment": "default",
        "createdAt": ts,
        "updatedAt": ts,
        "subject": subject,
    }


def test_fetch_traces_maps_validates_and_quarantines(server, db):
    t1, t2, t3 = "a" * 32, "b" * 32, "c" * 32
    server.observations = [
        _obs("o1", trace=t1, metadata={"success": True, "item_id": "i1", "prompt_id": "pr_1", "expected": "yes"}),
        _obs("o2", trace=t1),  # success from its observation score
        _obs("o3", trace=t2),  # success from the trace score
        _obs("o4", trace=t3, level="ERROR", statusMessage="timeout", output=None),  # no score: level
        _obs("o5", trace=t2, usageDetails={"input": -5, "output": 1}),  # bad: negative tokens
        _obs("o6", trace=t2, input=None),  # bad: no input
        _obs("other", trace=t2, prompt="billing-bot"),  # another agent: filtered by the server
        _obs("old", trace=t2, start="2026-10-01T00:00:00Z"),  # before `since`
    ]
    server.scores_v3 = [
        _score("success", False, "BOOLEAN", {"kind": "observation", "id": "o2", "traceId": t1}),
        _score("success", 0.9, "NUMERIC", {"kind": "trace", "id": t2}),
        _score("helpfulness", 0.1, "NUMERIC", {"kind": "trace", "id": t2}),
    ]
    res = _resource(server)
    assert res.enabled
    client = res.client()
    since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    valid, bad = fetch_trace_rows(client, AGENT, since=since, limit=50, page_size=2)

    # what the SDK sent
    gets = server.requests_to("GET", "/api/public/v2/observations")
    assert all(r["authorized"] for r in server.requests)
    assert len(gets) == 3 and [r["query"].get("limit") for r in gets] == ["2", "2", "2"]
    assert "cursor" not in gets[0]["query"] and gets[1]["query"]["cursor"]
    assert set(gets[0]["query"]["fields"].split(",")) >= {"io", "metadata", "usage", "prompt", "metrics"}
    flt = json.loads(gets[0]["query"]["filter"])
    assert {"type": "string", "column": "promptName", "operator": "=", "value": AGENT} in flt
    assert {"type": "string", "column": "type", "operator": "=", "value": "GENERATION"} in flt
    assert {"type": "datetime", "column": "startTime", "operator": ">=", "value": since.isoformat()} in flt
    score_reqs = server.requests_to("GET", "/api/public/v3/scores")
    assert len(score_reqs) == 1 and score_reqs[0]["query"]["name"] == "success"
    assert set(score_reqs[0]["query"]["traceId"].split(",")) == {t1, t2, t3}

    # what came out
    TraceSchema.validate(valid)
    rows = {r["id"]: r for r in valid.to_dict("records")}
    assert set(rows) == {"o1", "o2", "o3", "o4"}
    o1 = rows["o1"]
    assert o1["success"] is True and o1["metadata"]["success_source"] == "metadata"
    assert (o1["prompt_tokens"], o1["completion_tokens"], o1["latency_ms"]) == (20, 4, 250.0)
    assert o1["item_id"] == "i1" and o1["prompt_id"] == "pr_1" and o1["expected"] == "yes"
    assert o1["prompt_version"] == "3" and o1["source"] == "langfuse" and o1["agent_type"] == AGENT
    assert o1["metadata"]["langfuse"]["trace_id"] == t1 and o1["cost_usd"] == pytest.approx(0.0001)
    assert rows["o2"]["success"] is False and rows["o2"]["metadata"]["success_source"] == "observation_score"
    assert rows["o3"]["success"] is True and rows["o3"]["metadata"]["success_source"] == "trace_score"
    assert rows["o4"]["success"] is False and rows["o4"]["metadata"]["success_source"] == "level"
    assert rows["o4"]["error"] == "timeout" and rows["o4"]["output"] == ""
    reasons = {b["raw"]["id"]: b["reason"] for b in bad}
    assert reasons == {
        "o5": "prompt_tokens: greater_than_or_equal_to(0) failed (value -5)",
        "o6": "input: not_nullable failed (value None)",
    }

    # the resource method stores the quarantined ones; valid rows go to genepool.traces
    valid2 = res.fetch_traces(AGENT, since=since.isoformat(), db=db, partition_key="support-desk/g0002")
    assert sorted(valid2["id"]) == ["o1", "o2", "o3", "o4"]
    q = db.fetchall("SELECT raw, reason, source, partition_key FROM genepool.trace_quarantine ORDER BY id")
    assert [(r["raw"]["id"], r["source"], r["partition_key"]) for r in q] == [
        ("o5", "langfuse", "support-desk/g0002"),
        ("o6", "langfuse", "support-desk/g0002"),
    ]
    assert store_traces(db, valid2, "support-desk/g0002") == 4


def test_log_experiment_push_prompt_and_read_back(server):
    res = _resource(server, match_on="metadata")
    results = [
        {"item_id": "i1", "input": "2+2?", "output": "4", "expected": "4", "success": True,
         "prompt_tokens": 30, "completion_tokens": 2, "latency_ms": 120.0},
        {"item_id": "i2", "input": "capital of France?", "output": "", "expected": "Paris", "success": False,
         "prompt_tokens": 31, "completion_tokens": 0, "latency_ms": 80.0, "error": "empty answer",
         "checker_message": "expected 'Paris'"},
    ]
    out = res.log_experiment("support-desk/g0003", "pr_abc", results, prompt_version="1.2.0", model="smollm2")
    assert out["success_rate"] == 0.5 and set(out["observation_ids"]) == {"i1", "i2"}

    # OTLP protobuf arrived at the Langfuse endpoint and decodes
    otlp = server.requests_to("POST", "/api/public/otel/v1/traces")
    assert otlp and otlp[0]["content_type"] == "application/x-protobuf"
    ExportTraceServiceRequest().ParseFromString(otlp[0]["body"])
    # Langfuse's experiment layout (run_experiment's): one trace per item, run span -> task span
    assert server.experiment_layout_errors() == []
    assert len(set(out["trace_ids"].values())) == 2
    spans = {s["span_id"]: s for s in server.spans}
    g1 = spans[out["observation_ids"]["i1"]]
    root = spans[g1["parent_span_id"]]
    assert root["name"] == "experiment-item-run" and g1["name"] == "experiment-item-task"
    assert root["trace_id"] == out["trace_ids"]["i1"] and root["attributes"]["langfuse.experiment.id"] == (
        "support-desk/g0003")
    a = g1["attributes"]
    assert a["langfuse.observation.type"] == "generation"
    assert a["langfuse.observation.input"] == "2+2?" and a["langfuse.observation.output"] == "4"
    assert json.loads(a["langfuse.observation.usage_details"]) == {"input": 30, "output": 2}
    assert a["langfuse.observation.model.name"] == "smollm2"
    assert json.loads(a["langfuse.observation.metadata.success"]) is True
    assert json.loads(a["langfuse.observation.metadata.prompt_id"]) == "pr_abc"
    assert a["langfuse.experiment.item.id"] == "i1" and json.loads(a["langfuse.experiment.item.expected_output"]) == "4"
    assert (g1["end_ns"] - g1["start_ns"]) == 120_000_000
    g2 = spans[out["observation_ids"]["i2"]]["attributes"]
    assert g2["langfuse.observation.level"] == "ERROR" and g2["langfuse.observation.status_message"] == "empty answer"

    # scores: success/tokens/latency per item, on the task observation of the item's trace
    by = {(s["name"], s.get("observationId")): s for s in server.posted_scores}
    oid1, oid2 = out["observation_ids"]["i1"], out["observation_ids"]["i2"]
    assert by[("success", oid1)]["value"] == 1.0 and by[("success", oid1)]["dataType"] == "BOOLEAN"
    assert by[("success", oid2)]["value"] == 0.0 and by[("tokens", oid2)]["value"] == 31.0
    assert by[("latency_ms", oid1)]["value"] == 120.0 and by[("success", oid1)]["traceId"] == out["trace_ids"]["i1"]
    assert by[("success", oid2)]["traceId"] == out["trace_ids"]["i2"]
    assert len(server.posted_scores) == 6

    # round trip: the contract server ingested the spans as observations; read them back
    valid, bad = res.fetch_trace_rows(AGENT)
    assert bad == []
    rows = {r["item_id"]: r for r in valid.to_dict("records") if r["id"] in (oid1, oid2)}
    assert rows["i1"]["success"] is True and rows["i2"]["success"] is False
    assert rows["i2"]["error"] == "empty answer" and rows["i2"]["checker_message"] == "expected 'Paris'"
    assert rows["i1"]["latency_ms"] == pytest.approx(120.0) and rows["i1"]["prompt_tokens"] == 30
    assert rows["i1"]["partition_key"] == "support-desk/g0003" and rows["i1"]["prompt_version"] == "1.2.0"

    # prompts
    p1 = res.push_prompt(AGENT, "You are a support agent. {{tone}}", config={"genepool_prompt_id": "pr_abc"})
    p2 = res.push_prompt(AGENT, [{"role": "system", "content": "Be brief."}], labels=["production", "latest"])
    assert (p1["version"], p1["type"], p2["version"], p2["type"]) == (1, "text", 2, "chat")
    posted = [json.loads(r["body"]) for r in server.requests_to("POST", "/api/public/v2/prompts")]
    assert posted[0]["name"] == AGENT and posted[0]["labels"] == ["production"]
    assert posted[0]["config"] == {"genepool_prompt_id": "pr_abc"} and posted[0].get("type", "text") == "text"
    assert posted[1]["type"] == "chat" and posted[1]["prompt"][0]["content"] == "Be brief."


def test_span_attributes_with_in_memory_exporter(server, keys):
    exporter = InMemorySpanExporter()
    lf = Langfuse(
        public_key=keys[0], secret_key=keys[1], base_url=server.url, span_exporter=exporter,
        tracer_provider=TracerProvider(),
    )
    out = log_experiment_to(
        lf, "support-desk/g0004", "pr_x",
        [{"item_id": "q1", "input": "hi", "output": "hello", "success": True, "prompt_tokens": 5,
          "completion_tokens": 1, "latency_ms": 40.0, "tool_calls": [{"name": "lookup"}]}],
    )
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    gen = next(s for s in spans if s.name == "experiment-item-task")
    root = next(s for s in spans if s.name == "experiment-item-run")
    assert format(gen.context.span_id, "016x") == out["observation_ids"]["q1"]
    assert gen.parent.span_id == root.context.span_id
    a = gen.attributes
    assert a["langfuse.observation.type"] == "generation"
    assert json.loads(a["langfuse.observation.metadata.experiment_id"]) == "support-desk/g0004"
    assert json.loads(a["langfuse.observation.metadata.tool_calls"]) == [{"name": "lookup"}]
    assert json.loads(a["langfuse.observation.metadata.agent_type"]) == AGENT
    assert a["langfuse.experiment.item.id"] == "q1" and gen.end_time - gen.start_time == 40_000_000
    assert root.attributes["langfuse.observation.output"] == "hello"
    assert root.attributes["langfuse.environment"] == "sdk-experiment"
    assert not server.spans  # the custom exporter replaced OTLP export


def test_disabled_and_bad_input_errors(monkeypatch, server):
    res = LangfuseResource(host=server.url, public_key_env="GENEPOOL_TEST_NO_SUCH_PK", secret_key_env=SK_ENV)
    monkeypatch.delenv("GENEPOOL_TEST_NO_SUCH_PK", raising=False)
    assert not res.enabled
    with pytest.raises(LangfuseError, match="GENEPOOL_TEST_NO_SUCH_PK") as err:
        res.client()
    assert server.secret_key not in str(err.value)

    ok = _resource(server)
    with pytest.raises(ValueError, match=r"results\[1\]\.success must be true or false"):
        ok.log_experiment(
            "support-desk/g0001", "pr_1", [{"item_id": "a", "success": True}, {"item_id": "b", "success": "yes"}]
        )
    with pytest.raises(ValueError, match=r"results\[0\]\.prompt_tokens must be a non-negative integer"):
        ok.log_experiment("support-desk/g0001", "pr_1", [{"item_id": "a", "success": True, "prompt_tokens": -1}])
    with pytest.raises(ValueError, match="labels must be a list"):
        ok.push_prompt(AGENT, "x", labels="production")
    with pytest.raises(ValueError, match="since="):
        ok.fetch_trace_rows(AGENT, since="last tuesday")
    with pytest.raises(LangfuseError, match="match_on"):
        _resource(server, match_on="vibes").client()


def test_wrong_secret_is_rejected_by_the_server(server, monkeypatch):
    monkeypatch.setenv(SK_ENV, "sk-lf-wrong")
    from langfuse.api import UnauthorizedError

    with pytest.raises(UnauthorizedError):
        _resource(server).fetch_trace_rows(AGENT)
    auth = server.requests[0]
    assert not auth["authorized"]


def test_contract_server_cursor_is_base64_offset():
    # guards the contract server itself: cursors are opaque base64 strings like Langfuse's
    page, meta = LangfuseContractServer._page(list(range(5)), {"limit": "2"}, 1000, 50)
    assert page == [0, 1] and base64.urlsafe_b64decode(meta["cursor"]) == b"2"


# --- production traces: ingest by the observations' own start time with a look-back window ---------------
def _production_prompt(db):
    from genepool.core.genome import Genome
    from genepool.registry import PromptRegistry

    reg = PromptRegistry(db)
    rec = reg.register(AGENT, Genome(role="You help customers."))
    reg.label(rec.id, "production", "seed", "initial")
    return rec


def test_production_ingest_keeps_late_observations_and_never_duplicates(server, db, monkeypatch):
    import datetime as dt

    import dagster as dg

    from assets.production import production_traces
    from genepool.langfuse_io import ingest_since, lookback_from_env
    from resources import PostgresResource

    _production_prompt(db)
    resources = {"postgres": PostgresResource(database_url=db.url), "langfuse": _resource(server)}
    server.observations = [_obs("o-a", start="2026-11-02T10:00:00Z"), _obs("o-b", start="2026-11-02T10:30:00Z")]
    first = dg.materialize([production_traces], resources=resources)
    assert first.success
    rows = db.fetchall("SELECT id, partition_key, source FROM genepool.traces ORDER BY id")
    assert [(r["id"], r["partition_key"], r["source"]) for r in rows] == [("o-a", None, "langfuse"),
                                                                           ("o-b", None, "langfuse")]
    # the next ingest starts at the latest *observation* start time minus the look-back, not at ingest time
    assert ingest_since(db, AGENT) == dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
    # an observation that started at 10:10 reaches Langfuse only now (late): it is still fetched, once
    server.observations.append(_obs("o-late", start="2026-11-02T10:10:00Z"))
    second = dg.materialize([production_traces], resources=resources)
    mat = second.asset_materializations_for_node("production_traces")[0]
    assert mat.metadata["ingested"].value == 1
    ids = [r["id"] for r in db.fetchall("SELECT id FROM genepool.traces ORDER BY id")]
    assert ids == ["o-a", "o-b", "o-late"]
    monkeypatch.setenv("GENEPOOL_LANGFUSE_LOOKBACK_MINUTES", "-5")
    with pytest.raises(ValueError, match="GENEPOOL_LANGFUSE_LOOKBACK_MINUTES='-5' must be a number of minutes"):
        lookback_from_env()


def test_production_traces_sensor_after_an_approval(server, db, monkeypatch):
    import dagster as dg

    from assets.production import production_traces_sensor
    from genepool.registry import PromptRegistry
    from resources import PostgresResource

    seed = _production_prompt(db)
    res = {"postgres": PostgresResource(database_url=db.url), "langfuse": _resource(server)}
    with dg.instance_for_test() as instance:
        first = production_traces_sensor(dg.build_sensor_context(instance=instance, resources=res))
        assert first.run_requests[0].tags["genepool/reason"] == f"new production prompt: {AGENT}"
        quiet = production_traces_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                                                 resources=res))
        assert isinstance(quiet, dg.SkipReason) and "no production prompt changed" in quiet.skip_message
        reg = PromptRegistry(db)
        child = reg.register(AGENT, seed.genome.with_(instructions=("Be brief.",)), parent_ids=[seed.id],
                             generation=1, operator="add_instruction")
        reg.label(child.id, "candidate", "genepool", "better")
        reg.approve(child.id, "alice", "better")
        after = production_traces_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                                                 resources=res))
        assert after.run_requests[0].tags["genepool/reason"] == f"new production prompt: {AGENT}"
        off = {**res, "langfuse": LangfuseResource(public_key_env="GENEPOOL_TEST_UNSET_A",
                                                   secret_key_env="GENEPOOL_TEST_UNSET_B")}
        skip = production_traces_sensor(dg.build_sensor_context(instance=instance, resources=off))
        assert isinstance(skip, dg.SkipReason) and "Langfuse is not configured" in skip.skip_message
