"""The trace schema: one row per agent execution, validated with pandera before it is stored.

Rows come from the benchmark runner, Langfuse observations or OpenTelemetry GenAI exports and go
to ``genepool.traces``. Rows that fail validation are never dropped silently: ``validate_traces``
returns them as quarantine records ``{"raw": <row as JSON-safe dict>, "reason": "..."}`` and
``quarantine`` stores them in ``genepool.trace_quarantine``. Text columns are checked for NUL and control
characters and sizes (ids 512 characters, texts 100,000, JSON columns 100,000) before pandera runs; a
quarantine record keeps at most 2,000 characters of each value, with NUL escaped, as evidence.

No Dagster import here; the Dagster type built from ``TraceSchema`` lives in
``genepool.langfuse_io`` (``trace_dagster_type``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from genepool.validation import MAX_TRACE_ID_CHARS, MAX_TRACE_TEXT_CHARS, text_problem

# Column order of genepool.traces (created_at is set by the database).
TRACE_COLUMNS: tuple[str, ...] = (
    "id",
    "agent_type",
    "prompt_id",
    "prompt_version",
    "partition_key",
    "source",
    "item_id",
    "input",
    "output",
    "expected",
    "success",
    "checker_message",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "tool_calls",
    "error",
    "metadata",
)

# Values used when a column is missing from the frame altogether (same defaults as the table).
# id, agent_type, input, output and success have no default: a frame without them is rejected.
COLUMN_DEFAULTS: dict[str, Any] = {
    "prompt_id": None,
    "prompt_version": None,
    "partition_key": None,
    "source": "runner",
    "item_id": None,
    "expected": None,
    "checker_message": "",
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cost_usd": 0.0,
    "latency_ms": 0.0,
    "tool_calls": list,  # a factory: one new list per row
    "error": None,
    "metadata": dict,
}

_NULLABLE = ("prompt_id", "prompt_version", "partition_key", "item_id", "expected", "error")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


# (column, max characters, newlines allowed) of the text columns; see genepool.validation.
_TEXT_LIMITS: tuple[tuple[str, int, bool], ...] = (
    *((c, MAX_TRACE_ID_CHARS, False) for c in ("id", "agent_type", "prompt_id", "prompt_version", "partition_key",
                                               "source", "item_id")),
    *((c, MAX_TRACE_TEXT_CHARS, True) for c in ("input", "output", "expected", "checker_message", "error")),
)
_SURROGATE = re.compile("[\\ud800-\\udfff]")
MAX_QUARANTINE_STRING_CHARS = 2_000  # evidence kept of one over-long value in a quarantine record


def _json_text_problem(value: Any) -> str | None:
    """Size and characters of a JSON column (tool_calls, metadata): PostgreSQL's jsonb refuses \\u0000."""
    try:
        text = json.dumps(value, allow_nan=False, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None  # pandera's is_json_list / is_json_object names it
    if len(text) > MAX_TRACE_TEXT_CHARS:
        return f"is {len(text):,} characters of JSON (max {MAX_TRACE_TEXT_CHARS:,}); drop large values"
    if "\\u0000" in text:
        return "contains a NUL character (\\u0000); remove it"
    if _SURROGATE.search(text):
        return "contains an unpaired surrogate (not valid UTF-8); remove it"
    return None


def _evidence(value: Any) -> Any:
    """A quarantine-safe copy: no NUL or lone surrogates (jsonb refuses them), long strings cut with a note."""
    if isinstance(value, str):
        if len(value) > MAX_QUARANTINE_STRING_CHARS:
            cut = len(value) - MAX_QUARANTINE_STRING_CHARS
            value = value[:MAX_QUARANTINE_STRING_CHARS] + f"...[{cut:,} more chars]"
        value = value.replace("\x00", "\\x00")
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return {_evidence(str(k)): _evidence(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_evidence(v) for v in value]
    return value


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class TraceSchema(pa.DataFrameModel):
    """One validated trace row, matching the columns of genepool.traces."""

    id: Series[str] = pa.Field(str_length={"min_value": 1}, unique=True)
    agent_type: Series[str] = pa.Field(str_length={"min_value": 1})
    prompt_id: Series[str] = pa.Field(nullable=True)
    prompt_version: Series[str] = pa.Field(nullable=True)
    partition_key: Series[str] = pa.Field(nullable=True)
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(nullable=True)
    input: Series[str] = pa.Field()
    output: Series[str] = pa.Field()
    expected: Series[str] = pa.Field(nullable=True)
    # Not coerced: pandas would turn any non-empty string into True. validate_traces maps
    # "true"/"false"/1/0 to booleans first and quarantines anything else.
    success: Series[bool] = pa.Field(coerce=False)
    checker_message: Series[str] = pa.Field()
    prompt_tokens: Series[int] = pa.Field(ge=0)
    completion_tokens: Series[int] = pa.Field(ge=0)
    cost_usd: Series[float] = pa.Field(ge=0)
    latency_ms: Series[float] = pa.Field(ge=0)
    tool_calls: Series[object] = pa.Field()
    error: Series[str] = pa.Field(nullable=True)
    metadata: Series[object] = pa.Field()

    @pa.check("cost_usd", "latency_ms", name="is_finite")
    def _finite(cls, s: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(s.to_numpy(dtype=float)), index=s.index)

    @pa.check("prompt_tokens", "completion_tokens", name="fits_int32")
    def _int32(cls, s: Series[int]) -> Series[bool]:
        return s <= 2**31 - 1

    @pa.check("tool_calls", element_wise=True, name="is_json_list")
    def _tool_calls_list(cls, v: Any) -> bool:
        return isinstance(v, list) and _json_ok(v)

    @pa.check("metadata", element_wise=True, name="is_json_object")
    def _metadata_dict(cls, v: Any) -> bool:
        return isinstance(v, dict) and _json_ok(v)

    class Config:
        strict = True
        coerce = True
        ordered = False


def empty_traces() -> pd.DataFrame:
    """A valid frame with no rows and the trace columns (for sources that returned nothing)."""
    df = pd.DataFrame({c: pd.Series([], dtype=object) for c in TRACE_COLUMNS})
    return TraceSchema.validate(df)


# ---------------------------------------------------------------------------------------------
# JSON-safe copies of rows, for quarantine records


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that json.dumps (allow_nan=False) accepts; odd values become strings."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating, Decimal)):
        f = float(value)
        return f if math.isfinite(f) else str(f)  # 'nan', 'inf', '-inf': keep the evidence
    if isinstance(value, (dt.datetime, dt.date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [json_safe(v) for v in value]
    if value is pd.NaT:
        return None
    return repr(value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(json_safe(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _normalise_success(value: Any) -> bool | None:
    """True/False for recognised boolean spellings, None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    if isinstance(value, (float, np.floating)) and float(value) in (0.0, 1.0):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    return None


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"traces must be a pandas DataFrame, got {type(df).__name__}; build one with pd.DataFrame(rows)"
        )
    out = df.reset_index(drop=True).copy()
    for col, default in COLUMN_DEFAULTS.items():
        if col not in out.columns:
            out[col] = [default() if callable(default) else default for _ in range(len(out))]
        elif default is not None:
            # A frame built from dicts has NaN where a dict lacked the key: use the table default.
            values = out[col].tolist()
            if any(_none_if_missing(v) is None for v in values):
                out[col] = pd.Series(
                    [
                        (default() if callable(default) else default) if _none_if_missing(v) is None else v
                        for v in values
                    ],
                    index=out.index,
                    dtype=object,
                )
    return out


def validate_traces(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Split ``df`` into (valid rows coerced to the trace schema, quarantine records).

    A quarantine record is ``{"raw": <row as JSON-safe dict>, "reason": "<column>: <check> failed
    (value ...)"}``; several failures of one row are joined with "; ". Missing optional columns
    get the table's defaults. Of rows sharing an id the first is kept and the others are
    quarantined. A failure that cannot be pinned on a row (e.g. a required column is missing or
    an unknown column is present) quarantines every row, with that reason.
    """
    frame = _prepare(df)
    reasons: dict[int, list[str]] = {}

    # success: map boolean spellings ourselves (see TraceSchema.success).
    if "success" in frame.columns:
        normalised = []
        for i, v in enumerate(frame["success"].tolist()):
            b = _normalise_success(v)
            if b is None:
                reasons.setdefault(i, []).append(f"success: is_bool failed (value {_short(v)})")
                b = False
            normalised.append(b)
        checked = frame.copy()
        checked["success"] = pd.Series(normalised, index=frame.index, dtype=bool)
    else:
        checked = frame

    # Text limits and characters (NUL, control characters, sizes) before pandera and before any database call:
    # PostgreSQL refuses NUL in text and jsonb, and a 10 MB input must never reach a model.
    for col, limit, multiline in _TEXT_LIMITS:
        if col not in frame.columns:
            continue
        for i, v in enumerate(frame[col].tolist()):
            if v is None or not isinstance(v, str):
                continue  # missing / wrong type: pandera's checks name it
            problem = text_problem(v, limit, multiline=multiline)
            if problem:
                reasons.setdefault(i, []).append(f"{col}: {problem}")
    for col in ("tool_calls", "metadata"):
        if col not in frame.columns:
            continue
        for i, v in enumerate(frame[col].tolist()):
            problem = _json_text_problem(v)
            if problem:
                reasons.setdefault(i, []).append(f"{col}: {problem}")

    frame_level: list[str] = []
    if len(checked):
        try:
            TraceSchema.validate(checked, lazy=True)
        except pa.errors.SchemaErrors as exc:
            fc = exc.failure_cases
            row_cols = set(fc.loc[fc["index"].notna(), "column"])
            for rec in fc.to_dict("records"):
                col, check, idx, value = rec["column"], rec["check"], rec["index"], rec["failure_case"]
                if idx is None or (isinstance(idx, float) and math.isnan(idx)):
                    if col in row_cols:
                        continue  # a side effect of row failures already recorded (e.g. dtype)
                    if check == "column_in_schema":
                        frame_level.append(f"column {value!r}: not in the trace schema (remove or rename it)")
                    elif check == "column_in_dataframe":
                        frame_level.append(f"column {value!r}: required column is missing")
                    else:
                        frame_level.append(f"{col}: {check} failed (value {_short(value)})")
                    continue
                idx = int(idx)
                if check in ("field_uniqueness", "multiple_fields_uniqueness") and col == "id":
                    first = checked.index[checked["id"] == checked.at[idx, "id"]][0]
                    if idx == first:
                        continue
                    reasons.setdefault(idx, []).append(f"id: duplicate id failed (value {_short(value)})")
                    continue
                if any(m.startswith(f"{col}: ") for m in reasons.get(idx, [])):
                    continue  # one reason per column and row (coerce, dtype and nullable overlap)
                raw_value = frame.at[idx, col] if col in frame.columns else value
                reasons.setdefault(idx, []).append(f"{col}: {check} failed (value {_short(raw_value)})")

    if frame_level:
        reason = "; ".join(dict.fromkeys(frame_level))
        bad = {i: [reason, *reasons.get(i, [])] for i in range(len(frame))}
    else:
        bad = reasons

    quarantined = [
        {"raw": json_safe(frame.iloc[i].to_dict()), "reason": "; ".join(dict.fromkeys(msgs))}
        for i, msgs in sorted(bad.items())
    ]
    good_idx = [i for i in range(len(frame)) if i not in bad]
    if not good_idx:
        return empty_traces(), quarantined
    valid = TraceSchema.validate(checked.loc[good_idx].reset_index(drop=True))
    valid = valid[list(TRACE_COLUMNS)]
    for col in _NULLABLE:
        valid[col] = valid[col].astype(object).where(valid[col].notna(), None)
    return valid, quarantined


# ---------------------------------------------------------------------------------------------
# Storage


def _none_if_missing(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _row_for_db(row: Mapping[str, Any], partition_key: str | None) -> dict[str, Any]:
    out = {c: _none_if_missing(row[c]) if c not in ("tool_calls", "metadata") else row[c] for c in TRACE_COLUMNS}
    out["success"] = bool(out["success"])
    out["prompt_tokens"] = int(out["prompt_tokens"])
    out["completion_tokens"] = int(out["completion_tokens"])
    out["cost_usd"] = float(out["cost_usd"])
    out["latency_ms"] = float(out["latency_ms"])
    if out["partition_key"] is None:
        out["partition_key"] = partition_key
    return out


def store_traces(db: Any, df: pd.DataFrame, partition_key: str | None = None) -> int:
    """Insert validated trace rows into genepool.traces; returns the number of new rows.

    Rows whose id is already stored are skipped (ON CONFLICT (id) DO NOTHING), so re-importing
    is idempotent. ``partition_key`` fills rows that have none. The frame must pass
    ``TraceSchema`` (run ``validate_traces`` first); otherwise a SchemaError is raised.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"store_traces needs a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        return 0
    try:
        valid = TraceSchema.validate(_prepare(df))
    except pa.errors.SchemaError as exc:
        raise pa.errors.SchemaError(
            exc.schema, exc.data, f"store_traces got rows that fail the trace schema ({exc}); "
            "call validate_traces(df) first and quarantine the rejected rows",
        ) from exc
    rows = [_row_for_db(r, partition_key) for r in valid[list(TRACE_COLUMNS)].to_dict("records")]
    from psycopg.types.json import Jsonb

    sql = """
        INSERT INTO genepool.traces (id, agent_type, prompt_id, prompt_version, partition_key, source,
            item_id, input, output, expected, success, checker_message, prompt_tokens, completion_tokens,
            cost_usd, latency_ms, tool_calls, error, metadata)
        SELECT r.id, r.agent_type, r.prompt_id, r.prompt_version, r.partition_key, r.source,
            r.item_id, r.input, r.output, r.expected, r.success, r.checker_message, r.prompt_tokens,
            r.completion_tokens, r.cost_usd, r.latency_ms, coalesce(r.tool_calls, '[]'::jsonb), r.error,
            coalesce(r.metadata, '{}'::jsonb)
        FROM jsonb_to_recordset(%s::jsonb) AS r(id text, agent_type text, prompt_id text, prompt_version text,
            partition_key text, source text, item_id text, input text, output text, expected text,
            success boolean, checker_message text, prompt_tokens integer, completion_tokens integer,
            cost_usd double precision, latency_ms double precision, tool_calls jsonb, error text,
            metadata jsonb)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    """
    with db.connection() as conn:
        inserted = conn.execute(sql, (Jsonb(rows),)).fetchall()
    return len(inserted)


def quarantine(db: Any, rows: Iterable[Mapping[str, Any]], source: str, partition_key: str | None = None) -> int:
    """Store quarantine records (``{"raw": dict, "reason": str}``) in genepool.trace_quarantine."""
    if not source or not isinstance(source, str):
        raise ValueError(
            "quarantine: source must be a non-empty string naming where the rows came from, e.g. 'langfuse'"
        )
    records = []
    for i, rec in enumerate(rows):
        if not isinstance(rec, Mapping) or "raw" not in rec or "reason" not in rec:
            raise ValueError(
                f"quarantine: rows[{i}] must be a dict with keys 'raw' and 'reason' (as returned by validate_traces)"
            )
        reason = str(rec["reason"]).strip()
        if not reason:
            raise ValueError(f"quarantine: rows[{i}]['reason'] is empty; say why the row was rejected")
        raw = rec["raw"] if isinstance(rec["raw"], Mapping) else {"value": rec["raw"]}
        records.append((source, partition_key, json.dumps(_evidence(json_safe(raw)), allow_nan=False),
                        _evidence(reason)))
    if not records:
        return 0
    with db.connection() as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO genepool.trace_quarantine (source, partition_key, raw, reason)"
                " VALUES (%s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING",  # once per row and reason (0006)
                records,
            )
    return len(records)
