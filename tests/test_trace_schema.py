"""Trace schema: validation splits rows into valid and quarantined (with reasons); storage in PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from genepool.core.trace_schema import (
    TRACE_COLUMNS,
    TraceSchema,
    empty_traces,
    quarantine,
    store_traces,
    validate_traces,
)


def _row(**over):
    base = dict(
        id="t1",
        agent_type="support-desk",
        prompt_id="pr_0123456789abcdef",
        prompt_version="1.0.0",
        source="runner",
        item_id="item-1",
        input="Where is my parcel?",
        output="It ships tomorrow.",
        expected="ships tomorrow",
        success=True,
        prompt_tokens=12,
        completion_tokens=5,
        cost_usd=0.0,
        latency_ms=31.5,
        tool_calls=[{"name": "lookup_order", "arguments": {"id": 7}}],
        metadata={"model": "smollm2"},
    )
    base.update(over)
    return base


def test_valid_rows_pass_with_defaults_and_dtypes():
    other = {"id": "t2", "agent_type": "support-desk", "input": "a", "output": "b", "success": "false"}
    df = pd.DataFrame([_row(), other])
    valid, bad = validate_traces(df)
    assert bad == []
    assert list(valid.columns) == list(TRACE_COLUMNS)
    assert valid["success"].tolist() == [True, False]
    assert str(valid["prompt_tokens"].dtype) == "int64"
    second = valid.iloc[1]
    # defaults of the table for the columns row 2 lacked
    assert second["source"] == "runner" and second["checker_message"] == ""
    assert second["prompt_tokens"] == 0 and second["latency_ms"] == 0.0
    assert second["tool_calls"] == [] and second["metadata"] == {}
    assert second["prompt_id"] is None and second["error"] is None


def test_bad_rows_are_quarantined_with_column_and_check():
    df = pd.DataFrame(
        [
            _row(id="ok"),
            _row(id="neg", prompt_tokens=-4),
            _row(id="", agent_type="support-desk"),
            _row(id="nobool", success="maybe"),
            _row(id="tools", tool_calls="lookup_order"),
            _row(id="meta", metadata=["not", "a", "dict"]),
            _row(id="inf", latency_ms=float("inf")),
            _row(id="noinput", input=None),
        ]
    )
    valid, bad = validate_traces(df)
    assert valid["id"].tolist() == ["ok"]
    reasons = {b["raw"]["id"]: b["reason"] for b in bad}
    assert reasons["neg"] == "prompt_tokens: greater_than_or_equal_to(0) failed (value -4)"
    assert reasons[""].startswith("id: str_length(1, None) failed")
    assert reasons["nobool"] == "success: is_bool failed (value 'maybe')"
    assert reasons["tools"].startswith("tool_calls: is_json_list failed")
    assert reasons["meta"].startswith("metadata: is_json_object failed")
    assert reasons["inf"] == "latency_ms: is_finite failed (value 'inf')"
    assert reasons["noinput"] == "input: not_nullable failed (value None)"
    # raw rows are JSON-safe copies of what came in
    raw_inf = next(b["raw"] for b in bad if b["raw"]["id"] == "inf")
    assert raw_inf["latency_ms"] == "inf" and raw_inf["tool_calls"][0]["name"] == "lookup_order"


def test_duplicate_ids_keep_first_and_quarantine_the_rest():
    df = pd.DataFrame([_row(id="a", output="first"), _row(id="a", output="second"), _row(id="b")])
    valid, bad = validate_traces(df)
    assert valid["id"].tolist() == ["a", "b"] and valid.iloc[0]["output"] == "first"
    assert [b["raw"]["output"] for b in bad] == ["second"]
    assert bad[0]["reason"].startswith("id: duplicate id failed")


def test_frame_level_problems_quarantine_every_row():
    df = pd.DataFrame([_row(id="a"), _row(id="b")])
    valid, bad = validate_traces(df.assign(colour="red"))
    assert valid.empty and len(bad) == 2
    assert "column 'colour': not in the trace schema" in bad[0]["reason"]
    valid, bad = validate_traces(df.drop(columns=["output"]))
    assert valid.empty and "column 'output': required column is missing" in bad[1]["reason"]


def test_not_a_dataframe_is_a_clear_error():
    with pytest.raises(TypeError, match="pandas DataFrame"):
        validate_traces([_row()])


def test_empty_traces_is_valid():
    assert TraceSchema.validate(empty_traces()).empty


def test_store_and_quarantine_in_postgres(db):
    rows = [_row(id="a"), _row(id="b", partition_key="x/g0009"), _row(id="c", cost_usd=-1)]
    valid, bad = validate_traces(pd.DataFrame(rows))
    assert store_traces(db, valid, "support-desk/g0001") == 2
    assert store_traces(db, valid, "support-desk/g0001") == 0  # idempotent: ON CONFLICT DO NOTHING
    rows = {r["id"]: r for r in db.fetchall("SELECT * FROM genepool.traces ORDER BY id")}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["partition_key"] == "support-desk/g0001"
    assert rows["b"]["partition_key"] == "x/g0009"  # the row's own key wins
    assert rows["a"]["tool_calls"] == [{"name": "lookup_order", "arguments": {"id": 7}}]
    assert rows["a"]["metadata"] == {"model": "smollm2"} and rows["a"]["success"] is True
    assert rows["a"]["latency_ms"] == 31.5 and rows["a"]["prompt_tokens"] == 12

    assert quarantine(db, bad, "runner", "support-desk/g0001") == 1
    q = db.fetchall("SELECT * FROM genepool.trace_quarantine")
    assert len(q) == 1 and q[0]["raw"]["id"] == "c"
    assert q[0]["reason"].startswith("cost_usd: greater_than_or_equal_to(0)")
    assert q[0]["source"] == "runner" and q[0]["partition_key"] == "support-desk/g0001"


def test_store_refuses_unvalidated_rows(db):
    with pytest.raises(pa.errors.SchemaError, match="validate_traces"):
        store_traces(db, pd.DataFrame([_row(prompt_tokens=-1)]))
    assert db.fetchone("SELECT count(*) AS n FROM genepool.traces")["n"] == 0


def test_quarantine_rejects_malformed_records(db):
    with pytest.raises(ValueError, match=r"rows\[0\] must be a dict with keys 'raw' and 'reason'"):
        quarantine(db, [{"raw": {}}], "runner")
    with pytest.raises(ValueError, match="source"):
        quarantine(db, [{"raw": {}, "reason": "x"}], "")
