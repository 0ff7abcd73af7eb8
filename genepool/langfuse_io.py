"""Langfuse (SDK v5): read production traces, log experiments, push prompts.

The resource holds the *names* of the environment variables with the keys (``public_key_env``,
``secret_key_env``); the values are read when a client is built and are never logged or stored.
It is ``enabled`` only when both variables are set.

Reading (``fetch_traces``)
    ``api.observations.get_many`` (GET /api/public/v2/observations, cursor pages of at most 1000)
    with a structured ``filter``: observations of type GENERATION that belong to the agent type,
    where "belong" is chosen by ``match_on``:

    * ``prompt_name`` (default): ``promptName == agent_type`` -- generations linked to the
      Langfuse prompt that ``push_prompt`` publishes under the agent type's name;
    * ``metadata``: observation metadata ``agent_type == agent_type`` (what ``log_experiment``
      writes);
    * ``trace_name``: the trace is named after the agent type.

    ``since`` adds ``startTime >= since``. Each observation becomes one trace row:

    ================  ====================================================================
    trace column      observation field
    ================  ====================================================================
    id                id
    agent_type        the ``agent_type`` argument
    prompt_id         metadata.prompt_id (genepool prompt id), else None
    prompt_version    promptVersion, else metadata.prompt_version
    partition_key     metadata.partition_key, else None (``store_traces`` fills it)
    source            "langfuse"
    item_id           metadata.item_id
    input / output    input / output (strings from the API; output None -> ""); input None
                      is kept and the row is quarantined ("input: not_nullable")
    expected          metadata.expected
    success           see below
    checker_message   metadata.checker_message, else ""
    prompt_tokens     usageDetails input | prompt_tokens | input_tokens, else 0
    completion_tokens usageDetails output | completion_tokens | output_tokens, else 0
    cost_usd          totalCost, else 0
    latency_ms        latency (seconds) * 1000, else endTime - startTime, else 0
    tool_calls        metadata.tool_calls when it is a list, else []
    error             statusMessage (or "level ERROR") when level == ERROR, else None
    metadata          {"langfuse": {trace_id, name, type, model, level, start_time,
                      prompt_name, session_id}, "success_source": ..., "observation": <its
                      metadata>}
    ================  ====================================================================

    ``success``, first that applies (the choice is recorded in metadata.success_source):
    ``metadata.success`` (bool or "true"/"false") -> "metadata"; the latest score named
    ``success`` on the observation -> "observation_score"; on its trace -> "trace_score"
    (BOOLEAN value, NUMERIC >= 0.5, CATEGORICAL "true"/"false"); else ``level != ERROR`` ->
    "level". Scores are read with ``api.scores.get_many`` (GET /api/public/v3/scores) for the
    fetched trace ids, 50 per request.

    Rows go through ``validate_traces``: invalid ones are returned (and stored, given a database)
    as quarantine records with their reason, never dropped.

Writing
    ``log_experiment`` records an experiment in the layout of the SDK's ``run_experiment``: one trace
    per item, a root span ``experiment-item-run`` and a child generation ``experiment-item-task`` (input,
    output, usage, cost, level ERROR with the error, metadata incl. success), environment
    ``sdk-experiment``, ``langfuse.experiment.*`` attributes (id, name, metadata, item id, expected
    output, root observation id), item scores ``success`` (BOOLEAN), ``tokens`` and ``latency_ms``
    (NUMERIC) on the task observation. Spans go out as OTLP protobuf
    to /api/public/otel/v1/traces, scores to POST /api/public/scores; both are flushed before it
    returns. ``push_prompt`` calls ``create_prompt`` (text for a string, chat for a message list).

Note: the SDK keeps one client per public key per process (``LangfuseResourceManager``); using
the same public key with two hosts in one process is refused here with a clear error.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from genepool.core.trace_schema import (
    empty_traces,
    quarantine,
    validate_traces,
)

log = logging.getLogger(__name__)


OBSERVATION_FIELDS = "core,basic,time,io,metadata,model,usage,prompt,metrics"
EXPANDED_METADATA = "success,expected,item_id,prompt_id,prompt_version,partition_key,checker_message,tool_calls"
MATCH_ON = ("prompt_name", "metadata", "trace_name")
SOURCE = "langfuse"
DEFAULT_HOST = "https://cloud.langfuse.com"


class LangfuseError(RuntimeError):
    """Langfuse is not configured or refused a request; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Observation -> trace row


def _truthy(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _meta_value(meta: Mapping[str, Any], key: str) -> Any:
    """A metadata value; v5 SDKs JSON-encode values, the server may return them encoded."""
    value = meta.get(key)
    if isinstance(value, str) and value[:1] in '[{"':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _first_int(usage: Mapping[str, Any], keys: Sequence[str]) -> int:
    for k in keys:
        if usage.get(k) is not None:
            return usage[k]
    return 0


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _parse_time(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def score_success(score: Mapping[str, Any]) -> bool | None:
    """Success from one score dict (API field names): BOOLEAN, NUMERIC >= 0.5, "true"/"false"."""
    value, kind = score.get("value"), str(score.get("dataType") or "").upper()
    if kind == "BOOLEAN" or isinstance(value, bool):
        return bool(value)
    if kind == "NUMERIC" and isinstance(value, (int, float)):
        return float(value) >= 0.5
    return _truthy(value)


def observation_to_row(
    obs: Mapping[str, Any],
    agent_type: str,
    observation_scores: Mapping[str, bool] | None = None,
    trace_scores: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """Map one observation (API JSON field names) to a trace row; see the module docstring."""
    meta = dict(obs.get("metadata") or {})
    usage = obs.get("usageDetails") or {}
    level = obs.get("level")
    obs_id, trace_id = obs.get("id"), obs.get("traceId")

    success, source = _truthy(_meta_value(meta, "success")), "metadata"
    if success is None and observation_scores and obs_id in observation_scores:
        success, source = observation_scores[obs_id], "observation_score"
    if success is None and trace_scores and trace_id in trace_scores:
        success, source = trace_scores[trace_id], "trace_score"
    if success is None:
        success, source = level != "ERROR", "level"

    latency = obs.get("latency")
    if latency is not None:
        latency_ms = float(latency) * 1000.0
    else:
        start, end = _parse_time(obs.get("startTime")), _parse_time(obs.get("endTime"))
        latency_ms = (end - start).total_seconds() * 1000.0 if start and end else 0.0

    prompt_version = obs.get("promptVersion")
    if prompt_version is None:
        prompt_version = _meta_value(meta, "prompt_version")
    tool_calls = _meta_value(meta, "tool_calls")
    error = (obs.get("statusMessage") or "level ERROR") if level == "ERROR" else None
    expected = _meta_value(meta, "expected")

    return {
        "id": obs_id,
        "agent_type": agent_type,
        "prompt_id": _meta_value(meta, "prompt_id"),
        "prompt_version": None if prompt_version is None else str(prompt_version),
        "partition_key": _meta_value(meta, "partition_key"),
        "source": SOURCE,
        "item_id": None if meta.get("item_id") is None else str(_meta_value(meta, "item_id")),
        "input": obs.get("input"),
        "output": obs.get("output") if obs.get("output") is not None else "",
        "expected": None if expected is None else (expected if isinstance(expected, str) else json.dumps(expected)),
        "success": success,
        "checker_message": str(_meta_value(meta, "checker_message") or ""),
        "prompt_tokens": _first_int(usage, ("input", "prompt_tokens", "input_tokens")),
        "completion_tokens": _first_int(usage, ("output", "completion_tokens", "output_tokens")),
        "cost_usd": float(obs.get("totalCost") or 0.0),
        "latency_ms": latency_ms,
        "tool_calls": tool_calls if isinstance(tool_calls, list) else [],
        "error": error,
        "metadata": {
            "langfuse": {
                "trace_id": trace_id,
                "name": obs.get("name"),
                "type": obs.get("type"),
                "model": obs.get("model"),
                "level": level,
                "start_time": _iso(obs.get("startTime")),
                "prompt_name": obs.get("promptName"),
                "session_id": obs.get("sessionId"),
            },
            "success_source": source,
            "observation": meta,
        },
    }


def observations_to_traces(
    observations: Sequence[Mapping[str, Any]],
    agent_type: str,
    observation_scores: Mapping[str, bool] | None = None,
    trace_scores: Mapping[str, bool] | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Map observations to trace rows and validate them: (valid rows, quarantine records)."""
    rows, bad = [], []
    for obs in observations:
        try:
            rows.append(observation_to_row(obs, agent_type, observation_scores, trace_scores))
        except Exception as exc:  # a malformed observation is quarantined, not fatal
            bad.append({"raw": dict(obs), "reason": f"observation: cannot be mapped ({type(exc).__name__}: {exc})"})
    if not rows:
        return empty_traces(), bad
    valid, rejected = validate_traces(pd.DataFrame(rows))
    return valid, bad + rejected


# ---------------------------------------------------------------------------------------------
# Functions on a Langfuse client (used by the resource; tests call them with their own client)


def _filters(agent_type: str, match_on: str, since: dt.datetime | None) -> list[dict]:
    flt: list[dict] = [{"type": "string", "column": "type", "operator": "=", "value": "GENERATION"}]
    if match_on == "prompt_name":
        flt.append({"type": "string", "column": "promptName", "operator": "=", "value": agent_type})
    elif match_on == "metadata":
        flt.append(
            {"type": "stringObject", "column": "metadata", "key": "agent_type", "operator": "=", "value": agent_type}
        )
    elif match_on == "trace_name":
        flt.append({"type": "string", "column": "traceName", "operator": "=", "value": agent_type})
    else:
        raise ValueError(f"match_on={match_on!r} is not supported; use one of {', '.join(MATCH_ON)}")
    if since is not None:
        flt.append({"type": "datetime", "column": "startTime", "operator": ">=", "value": since.isoformat()})
    return flt


def _check_since(since: Any) -> dt.datetime | None:
    if since is None:
        return None
    if isinstance(since, str):
        try:
            since = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"since={since!r} is not an ISO 8601 datetime, e.g. 2026-11-01T00:00:00Z") from exc
    if not isinstance(since, dt.datetime):
        raise ValueError(f"since must be a datetime or ISO 8601 string, got {type(since).__name__}")
    return since if since.tzinfo else since.replace(tzinfo=dt.UTC)


def fetch_observations(
    lf: Any,
    agent_type: str,
    since: Any = None,
    limit: int = 1000,
    match_on: str = "prompt_name",
    max_pages: int = 100,
    page_size: int = 1000,
) -> list[dict]:
    """Observations (API JSON field names) of one agent type, following cursors; bounded by limit and max_pages."""
    if not isinstance(agent_type, str) or not agent_type.strip():
        raise ValueError("agent_type must be a non-empty string, e.g. 'support-desk'")
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    flt = json.dumps(_filters(agent_type, match_on, _check_since(since)))
    out: list[dict] = []
    cursor = None
    for _page in range(max_pages):
        resp = lf.api.observations.get_many(
            fields=OBSERVATION_FIELDS,
            expand_metadata=EXPANDED_METADATA,
            filter=flt,
            limit=min(page_size, 1000, limit - len(out)),
            cursor=cursor,
        )
        out.extend(o.dict() for o in resp.data)
        cursor = resp.meta.cursor if resp.meta else None
        if not cursor or not resp.data or len(out) >= limit:
            break
    else:
        log.warning("Langfuse: stopped after %d pages of observations for %s (max_pages)", max_pages, agent_type)
    return out[:limit]


EXPERIMENT_ENVIRONMENT = "sdk-experiment"  # what the SDK's run_experiment sets (langfuse._client.constants)
EXPERIMENT_ITEM_RUN = "experiment-item-run"
EXPERIMENT_ITEM_TASK = "experiment-item-task"
LOOKBACK_ENV = "GENEPOOL_LANGFUSE_LOOKBACK_MINUTES"
DEFAULT_LOOKBACK = dt.timedelta(minutes=60)


def lookback_from_env(env: Mapping[str, str] | None = None) -> dt.timedelta:
    """The look-back window of an ingest (GENEPOOL_LANGFUSE_LOOKBACK_MINUTES, default 60, 0..10080)."""
    raw = (os.environ if env is None else env).get(LOOKBACK_ENV)
    if raw is None or raw == "":
        return DEFAULT_LOOKBACK
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not 0 <= minutes <= 10080:  # also refuses NaN
        raise ValueError(f"{LOOKBACK_ENV}={raw!r} must be a number of minutes between 0 and 10080 (one week)")
    return dt.timedelta(minutes=minutes)


def ingest_since(db: Any, agent_type: str, lookback: dt.timedelta | None = None) -> dt.datetime | None:
    """Where the next Langfuse ingest of an agent starts: the latest *observation start time* already stored
    (the observation's own clock, not genepool's ingest time) minus a look-back window, so observations that
    reach Langfuse late are still fetched; rows are stored by observation id, so the overlap is deduplicated.
    None (everything) when nothing is stored yet."""
    lookback = DEFAULT_LOOKBACK if lookback is None else lookback
    row = db.fetchone(
        "SELECT max((metadata->'langfuse'->>'start_time')::timestamptz) AS t FROM genepool.traces"
        " WHERE agent_type = %s AND source = %s"
        " AND metadata->'langfuse'->>'start_time' ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T'",
        (agent_type, SOURCE),
    )
    last = row["t"] if row else None
    return None if last is None else last - lookback


def fetch_success_scores(lf: Any, trace_ids: Sequence[str], max_pages: int = 100) -> tuple[dict, dict]:
    """Latest ``success`` scores of these traces: ({observation_id: bool}, {trace_id: bool})."""
    by_obs: dict[str, tuple[Any, bool]] = {}
    by_trace: dict[str, tuple[Any, bool]] = {}
    ids = sorted({t for t in trace_ids if t})
    for start in range(0, len(ids), 50):
        cursor = None
        for _page in range(max_pages):
            resp = lf.api.scores.get_many(
                name="success", trace_id=",".join(ids[start : start + 50]), fields="subject", limit=100, cursor=cursor
            )
            for score in resp.data:
                s = score.dict()
                ok = score_success(s)
                subject = s.get("subject") or {}
                if ok is None or not subject.get("id"):
                    continue
                target = by_obs if subject.get("kind") == "observation" else by_trace
                if subject.get("kind") not in ("observation", "trace"):
                    continue
                stamp = str(s.get("timestamp"))
                prev = target.get(subject["id"])
                if prev is None or stamp >= prev[0]:
                    target[subject["id"]] = (stamp, ok)
            cursor = resp.meta.cursor if resp.meta else None
            if not cursor or not resp.data:
                break
    return {k: v[1] for k, v in by_obs.items()}, {k: v[1] for k, v in by_trace.items()}


def fetch_trace_rows(
    lf: Any,
    agent_type: str,
    since: Any = None,
    limit: int = 1000,
    match_on: str = "prompt_name",
    max_pages: int = 100,
    page_size: int = 1000,
) -> tuple[pd.DataFrame, list[dict]]:
    """Observations of an agent type as (valid trace rows, quarantine records)."""
    observations = fetch_observations(lf, agent_type, since, limit, match_on, max_pages, page_size)
    obs_scores, trace_scores = fetch_success_scores(lf, [o.get("traceId") for o in observations], max_pages)
    return observations_to_traces(observations, agent_type, obs_scores, trace_scores)


def _check_results(results: Sequence[Mapping[str, Any]]) -> list[dict]:
    if not isinstance(results, Sequence) or isinstance(results, (str, bytes)):
        raise ValueError("results must be a list of dicts, one per benchmark item")
    checked = []
    for i, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise ValueError(f"results[{i}] must be a dict, got {type(r).__name__}")
        if not isinstance(r.get("item_id"), str) or not r["item_id"]:
            raise ValueError(f"results[{i}].item_id must be a non-empty string")
        if not isinstance(r.get("success"), bool):
            raise ValueError(f"results[{i}].success must be true or false, got {r.get('success')!r}")
        for key in ("prompt_tokens", "completion_tokens"):
            v = r.get(key, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"results[{i}].{key} must be a non-negative integer, got {v!r}")
        for key in ("latency_ms", "cost_usd"):
            v = r.get(key, 0.0)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"results[{i}].{key} must be a non-negative number, got {v!r}")
        checked.append(dict(r))
    return checked


def _set_attributes(observation: Any, attributes: Mapping[str, Any]) -> None:
    span = getattr(observation, "_otel_span", None)  # the SDK's own run_experiment does the same
    if span is not None:
        for k, v in attributes.items():
            if v is not None:
                span.set_attribute(k, v)


def log_experiment_to(
    lf: Any,
    experiment_id: str,
    prompt_id: str,
    results: Sequence[Mapping[str, Any]],
    *,
    agent_type: str | None = None,
    prompt_version: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Record an experiment run (see the module docstring); returns the trace and observation ids."""
    if not isinstance(experiment_id, str) or not experiment_id:
        raise ValueError("experiment_id must be a non-empty string such as 'support-desk/g0001'")
    if not isinstance(prompt_id, str) or not prompt_id:
        raise ValueError("prompt_id must be the genepool prompt id (e.g. 'pr_0123456789abcdef')")
    items = _check_results(results)
    agent_type = agent_type or experiment_id.split("/", 1)[0]
    n_ok = sum(1 for r in items if r["success"])
    rate = n_ok / len(items) if items else 0.0
    experiment_attrs = {
        "langfuse.experiment.id": experiment_id,
        "langfuse.experiment.name": experiment_id,
        "langfuse.experiment.metadata": json.dumps({"prompt_id": prompt_id, "agent_type": agent_type}),
        "langfuse.environment": EXPERIMENT_ENVIRONMENT,
    }
    # Langfuse's run_experiment layout: ONE TRACE PER ITEM, a root span "experiment-item-run" with the item's
    # input/output and a child "experiment-item-task" (here a generation, with usage) that carries the
    # item's scores; every span names the experiment, the item and the task observation, so Langfuse's
    # experiment view groups them.
    observation_ids: dict[str, str] = {}
    trace_ids: dict[str, str] = {}
    scores = 0
    for r in items:
        error = r.get("error") or None
        tokens = int(r.get("prompt_tokens", 0)) + int(r.get("completion_tokens", 0))
        latency_ms = float(r.get("latency_ms", 0.0))
        meta = {
            "experiment_name": experiment_id,
            "agent_type": agent_type,
            "experiment_id": experiment_id,
            "partition_key": experiment_id,
            "prompt_id": prompt_id,
            "prompt_version": prompt_version,
            "item_id": r["item_id"],
            "success": r["success"],
            "expected": r.get("expected"),
            "checker_message": r.get("checker_message") or None,
            "latency_ms": latency_ms,
            "tool_calls": r.get("tool_calls") or None,
        }
        item_attrs = {**experiment_attrs, "langfuse.experiment.item.id": r["item_id"],
                      "langfuse.experiment.item.expected_output": json.dumps(r.get("expected"))}
        root = lf.start_observation(name=EXPERIMENT_ITEM_RUN, as_type="span", input=str(r.get("input", "")),
                                    output=str(r.get("output", "")), metadata=meta)
        _set_attributes(root, item_attrs)
        gen = root.start_observation(
            name=EXPERIMENT_ITEM_TASK,
            as_type="generation",
            input=str(r.get("input", "")),
            output=str(r.get("output", "")),
            model=r.get("model") or model,
            usage_details={"input": int(r.get("prompt_tokens", 0)), "output": int(r.get("completion_tokens", 0))},
            cost_details={"total": float(r["cost_usd"])} if r.get("cost_usd") else None,
            level="ERROR" if error else None,
            status_message=str(error) if error else None,
            metadata=meta,
        )
        _set_attributes(gen, {**item_attrs, "langfuse.experiment.item.root_observation_id": gen.id})
        _set_attributes(root, {"langfuse.experiment.item.root_observation_id": gen.id})
        start_ns = getattr(getattr(gen, "_otel_span", None), "start_time", None)
        end_ns = start_ns + int(latency_ms * 1e6) if start_ns else None
        gen.end(end_time=end_ns)
        gen.score(name="success", value=1.0 if r["success"] else 0.0, data_type="BOOLEAN")
        gen.score(name="tokens", value=float(tokens), data_type="NUMERIC")
        gen.score(name="latency_ms", value=latency_ms, data_type="NUMERIC")
        scores += 3
        root.end(end_time=end_ns if end_ns and end_ns > getattr(root._otel_span, "start_time", 0) else None)
        observation_ids[r["item_id"]] = gen.id
        trace_ids[r["item_id"]] = root.trace_id
    lf.flush()
    return {
        "trace_ids": trace_ids,
        "observation_ids": observation_ids,
        "scores": scores,
        "success_rate": rate,
    }


def push_prompt_to(
    lf: Any,
    name: str,
    content: str | list[dict[str, str]],
    labels: Sequence[str] = ("production",),
    config: Mapping[str, Any] | None = None,
    commit_message: str | None = None,
) -> dict[str, Any]:
    """Publish a prompt version: ``create_prompt`` (type text for a string, chat for messages)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string (use the agent type, e.g. 'support-desk')")
    if isinstance(labels, str) or not all(isinstance(label, str) and label for label in labels):
        raise ValueError(f"labels must be a list of non-empty strings such as ['production'], got {labels!r}")
    if isinstance(content, str):
        kind = "text"
    elif isinstance(content, list) and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in content):
        kind = "chat"
    else:
        raise ValueError("content must be a template string or a list of {'role', 'content'} chat messages")
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    prompt = lf.create_prompt(
        name=name,
        prompt=content,
        labels=list(labels),
        type=kind,
        config=dict(config or {}),
        commit_message=commit_message,
    )
    return {"name": prompt.name, "version": prompt.version, "labels": list(prompt.labels), "type": kind}


# ---------------------------------------------------------------------------------------------
# The connection (resources/langfuse.py wraps it as a Dagster resource)


@dataclass(frozen=True)
class LangfuseConnection:
    """Langfuse client settings; keys are read from the named environment variables at call time."""

    host: str | None = None  # None: LANGFUSE_BASE_URL, LANGFUSE_HOST, then https://cloud.langfuse.com
    public_key_env: str = "LANGFUSE_PUBLIC_KEY"
    secret_key_env: str = "LANGFUSE_SECRET_KEY"
    match_on: str = "prompt_name"
    timeout_s: int = 10
    max_pages: int = 100
    page_size: int = 1000

    @property
    def enabled(self) -> bool:
        return bool(os.environ.get(self.public_key_env)) and bool(os.environ.get(self.secret_key_env))

    def base_url(self) -> str:
        return (
            self.host or os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST") or DEFAULT_HOST
        ).rstrip("/")

    def client(self) -> Any:
        """A Langfuse client; raises LangfuseError (naming the variables, never their values) if keys are unset."""
        if self.match_on not in MATCH_ON:
            raise LangfuseError(f"LangfuseResource.match_on={self.match_on!r}; use one of {', '.join(MATCH_ON)}")
        public_key = os.environ.get(self.public_key_env)
        secret_key = os.environ.get(self.secret_key_env)
        if not public_key or not secret_key:
            raise LangfuseError(
                f"Langfuse is not configured: set the environment variables {self.public_key_env} and "
                f"{self.secret_key_env} (names from LangfuseResource.public_key_env/secret_key_env)"
            )
        from langfuse import Langfuse
        from langfuse._client.resource_manager import LangfuseResourceManager
        from opentelemetry.sdk.trace import TracerProvider

        base_url = self.base_url()
        existing = LangfuseResourceManager._instances.get(public_key)
        if existing is not None and existing.base_url.rstrip("/") != base_url:
            raise LangfuseError(
                f"this Langfuse public key is already used with {existing.base_url} in this process; "
                f"the SDK keeps one client per key, so use one host per key (asked for {base_url})"
            )
        return Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=base_url,
            timeout=self.timeout_s,
            # A provider of our own, so genepool spans do not go to a global provider others use.
            tracer_provider=None if existing is not None else TracerProvider(),
        )

    def fetch_trace_rows(
        self, agent_type: str, since: Any = None, limit: int = 1000
    ) -> tuple[pd.DataFrame, list[dict]]:
        """(valid trace rows, quarantine records) of an agent type; nothing is stored."""
        return fetch_trace_rows(
            self.client(), agent_type, since, limit, self.match_on, self.max_pages, self.page_size
        )

    def fetch_traces(
        self,
        agent_type: str,
        since: Any = None,
        limit: int = 1000,
        *,
        db: Any,
        partition_key: str | None = None,
    ) -> pd.DataFrame:
        """Valid trace rows of an agent type; the rejected ones go to genepool.trace_quarantine in ``db``."""
        valid, bad = self.fetch_trace_rows(agent_type, since, limit)
        if bad:
            quarantine(db, bad, SOURCE, partition_key)
            log.warning("Langfuse: %d of %d observations quarantined", len(bad), len(bad) + len(valid))
        return valid

    def log_experiment(
        self, experiment_id: str, prompt_id: str, results: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> dict[str, Any]:
        return log_experiment_to(self.client(), experiment_id, prompt_id, results, **kwargs)

    def push_prompt(
        self,
        name: str,
        content: str | list[dict[str, str]],
        labels: Sequence[str] = ("production",),
        config: Mapping[str, Any] | None = None,
        commit_message: str | None = None,
    ) -> dict[str, Any]:
        return push_prompt_to(self.client(), name, content, labels, config, commit_message)
