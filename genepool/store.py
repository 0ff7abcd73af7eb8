"""All the SQL of the generation steps, in one place (tables: genepool/migrations/).

Steps call these functions and never write SQL themselves. A step REPLACES the rows it wrote before for
its partition (delete and insert in one transaction, under the partition's lock), so a re-run never
leaves a row of an earlier attempt behind (a stale row), whatever changed in between (the production
prompt, the budget left); a generation whose fingerprint changed is refused before anything is written
(genepool/steps/context.py). The prompt registry is append-only and never rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from genepool.agents import AgentSpec
from genepool.core.budget import BudgetExceeded
from genepool.db import Database

REPORT_STEP = "test_report"  # the held-out report: its rollouts have their own cap (max_report_rollouts)


# --- agents and experiments ------------------------------------------------------------------------
def ensure_agent(db: Database, agent: AgentSpec) -> None:
    db.execute(
        "INSERT INTO genepool.agents (agent_type, description, benchmark_path) VALUES (%s,%s,%s)"
        " ON CONFLICT (agent_type) DO NOTHING",
        (agent.agent_type, agent.description, str(agent.benchmark_path)),
    )


def experiment(db: Database, key: str) -> dict | None:
    return db.fetchone("SELECT * FROM genepool.experiments WHERE id = %s", (key,))


def insert_experiment(
    db: Database, key: str, agent_type: str, generation: int, seed: int, config: dict, fingerprint: str, parts: dict
) -> dict:
    """Insert the experiment row if absent, adopt a fingerprint on a row made before 0006; return the row."""
    db.execute(
        "INSERT INTO genepool.experiments (id, agent_type, generation, seed, config, fingerprint, fingerprint_parts)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET"
        " fingerprint = coalesce(genepool.experiments.fingerprint, EXCLUDED.fingerprint),"
        " fingerprint_parts = coalesce(genepool.experiments.fingerprint_parts, EXCLUDED.fingerprint_parts),"
        " attempts = genepool.experiments.attempts + 1",
        (key, agent_type, generation, seed, json.dumps(config), fingerprint, json.dumps(parts, sort_keys=True)),
    )
    row = experiment(db, key)
    assert row is not None
    return row


def mark_finished(db: Database, key: str) -> None:
    db.execute("UPDATE genepool.experiments SET finished_at = now() WHERE id = %s", (key,))


def last_generation(db: Database, agent_type: str) -> int:
    row = db.fetchone("SELECT max(generation) AS g FROM genepool.experiments WHERE agent_type = %s", (agent_type,))
    return int(row["g"] or 0) if row else 0


# --- lineage ---------------------------------------------------------------------------------------
def previous_front(db: Database, prev_key: str, limit: int) -> list[str]:
    """Prompt ids of the previous generation's front that solved something, best first."""
    rows = db.fetchall(
        "SELECT prompt_id FROM genepool.front_members WHERE experiment_id = %s"
        " AND (success_rate > 0 OR screen_success > 0)"
        " ORDER BY on_front DESC, success_rate DESC, avg_tokens ASC, prompt_id LIMIT %s",
        (prev_key, limit),
    )
    return [r["prompt_id"] for r in rows]


def _replace(db: Database, delete: str, params: tuple, insert: str, rows: Sequence[Mapping[str, Any]]) -> None:
    with db.connection() as conn:
        conn.execute(delete, params)
        if rows:
            with conn.cursor() as cur:
                cur.executemany(insert, list(rows))


def replace_candidates(db: Database, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    _replace(
        db, "DELETE FROM genepool.candidates WHERE experiment_id = %s", (key,),
        "INSERT INTO genepool.candidates (experiment_id, prompt_id, position, operator, parent_ids, genome,"
        " status, reason) VALUES (%(experiment_id)s,%(prompt_id)s,%(position)s,%(operator)s,%(parent_ids)s,"
        "%(genome)s,%(status)s,%(reason)s)",
        [{**r, "experiment_id": key, "genome": json.dumps(r["genome"]), "parent_ids": list(r["parent_ids"])}
         for r in rows],
    )


RESULT_COLUMNS = [
    "experiment_id", "prompt_id", "item_id", "split", "role", "task", "success", "score", "output",
    "checker_message", "signature", "prompt_tokens", "completion_tokens", "latency_ms", "cost_usd", "cached",
]


def replace_results(db: Database, key: str, roles: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """The partition's results of ``roles`` become ``rows`` (experiments: target+control; validation; test)."""
    _replace(
        db, "DELETE FROM genepool.experiment_results WHERE experiment_id = %s AND role = ANY(%s)", (key, list(roles)),
        "INSERT INTO genepool.experiment_results (experiment_id, prompt_id, item_id, split, role, success, score,"
        " output, checker_message, prompt_tokens, completion_tokens, latency_ms, cost_usd, cached)"
        " VALUES (%(experiment_id)s,%(prompt_id)s,%(item_id)s,%(split)s,%(role)s,%(success)s,%(score)s,%(output)s,"
        "%(checker_message)s,%(prompt_tokens)s,%(completion_tokens)s,%(latency_ms)s,%(cost_usd)s,%(cached)s)",
        rows,
    )


def replace_front_members(db: Database, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    _replace(
        db, "DELETE FROM genepool.front_members WHERE experiment_id = %s", (key,),
        "INSERT INTO genepool.front_members (experiment_id, prompt_id, rank, success_rate, avg_tokens,"
        " avg_latency_ms, control_regressions, feasible, on_front, survivor, screen_success)"
        " VALUES (%(experiment_id)s,%(prompt_id)s,%(rank)s,%(success_rate)s,%(avg_tokens)s,%(avg_latency_ms)s,"
        "%(control_regressions)s,%(feasible)s,%(on_front)s,%(survivor)s,%(screen_success)s)",
        [{**r, "experiment_id": key} for r in rows],
    )


@contextlib.contextmanager
def replacing_traces(db: Database, key: str, source: str) -> Iterator[None]:
    """One transaction in which the partition's traces and quarantined rows of ``source`` are deleted, then
    written again by the caller (``store_traces`` / ``quarantine`` inside the block)."""
    with db.connection() as conn:
        conn.execute("DELETE FROM genepool.traces WHERE partition_key = %s AND source = %s", (key, source))
        conn.execute("DELETE FROM genepool.trace_quarantine WHERE partition_key = %s AND source = %s", (key, source))
        yield


def quarantined_count(db: Database, key: str) -> int:
    return int(db.fetchone("SELECT count(*) AS n FROM genepool.trace_quarantine WHERE partition_key = %s", (key,))["n"])


def last_trace_time(db: Database, agent_type: str, source: str) -> Any:
    return db.fetchone(
        "SELECT max(created_at) AS t FROM genepool.traces WHERE agent_type = %s AND source = %s", (agent_type, source)
    )["t"]


# --- spend -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepSpend:
    rollouts: int = 0
    tokens: int = 0
    usd: float = 0.0
    llm_calls: int = 0


@dataclass(frozen=True)
class Spend:
    """What a generation spent, per step. ``rollouts`` is the optimisation budget's count (the test
    report has its own cap and is left out); ``usd`` and ``llm_calls`` cover every attempt."""

    steps: Mapping[str, StepSpend] = field(default_factory=dict)

    @property
    def rollouts(self) -> int:
        return sum(s.rollouts for k, s in self.steps.items() if k != REPORT_STEP)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.steps.values())

    @property
    def usd(self) -> float:
        return sum(s.usd for s in self.steps.values())

    @property
    def llm_calls(self) -> int:
        return sum(s.llm_calls for s in self.steps.values())

    def step(self, name: str) -> StepSpend:
        return self.steps.get(name, StepSpend())


# the step whose calls a purpose names (genepool.llm_calls.purpose -> generation_spend.step)
PURPOSE_STEP = {"traces": "traces", "reflect": "population", "experiment": "experiments",
                "validation": "validation", "test": REPORT_STEP}


def generation_spend(db: Database, key: str) -> Spend:
    """Work per step (rollouts, tokens of the step's last attempt) from ``generation_spend``; money and
    uncached calls of EVERY attempt from the ledger ``genepool.llm_calls`` (one row per call, written with
    the call), so a process killed between a call and its bookkeeping loses no dollar."""
    work = {r["step"]: r for r in db.fetchall(
        "SELECT step, rollouts, tokens FROM genepool.generation_spend WHERE experiment_id = %s", (key,))}
    money: dict[str, tuple[float, int]] = {}
    for r in db.fetchall(
        "SELECT purpose, coalesce(sum(cost_usd), 0) AS usd, count(*) FILTER (WHERE NOT cached) AS calls"
        " FROM genepool.llm_calls WHERE partition_key = %s GROUP BY purpose", (key,)
    ):
        step = PURPOSE_STEP.get(r["purpose"], r["purpose"])
        usd, calls = money.get(step, (0.0, 0))
        money[step] = (usd + float(r["usd"]), calls + int(r["calls"]))
    steps = sorted(set(work) | set(money))
    return Spend({s: StepSpend(int(work[s]["rollouts"]) if s in work else 0, int(work[s]["tokens"]) if s in work else 0,
                               *money.get(s, (0.0, 0))) for s in steps})


def start_step_spend(db: Database, key: str, step: str) -> None:
    """A step (re)starts: its work counters (rollouts, tokens) restart at 0; money and calls stay."""
    db.execute(
        "INSERT INTO genepool.generation_spend (experiment_id, step) VALUES (%s,%s)"
        " ON CONFLICT (experiment_id, step) DO UPDATE SET rollouts = 0, tokens = 0, updated_at = now()",
        (key, step),
    )


def add_spend(db: Database, key: str, step: str, rollouts: int, tokens: int, usd: float, llm_calls: int) -> None:
    """Add one call's spend atomically (two writers add up, never overwrite each other)."""
    db.execute(
        "INSERT INTO genepool.generation_spend AS s (experiment_id, step, rollouts, tokens, usd, llm_calls)"
        " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (experiment_id, step) DO UPDATE SET"
        " rollouts = s.rollouts + EXCLUDED.rollouts, tokens = s.tokens + EXCLUDED.tokens,"
        " usd = s.usd + EXCLUDED.usd, llm_calls = s.llm_calls + EXCLUDED.llm_calls, updated_at = now()",
        (key, step, int(rollouts), int(tokens), float(usd), int(llm_calls)),
    )


# --- the daily USD cap -----------------------------------------------------------------------------
_DAILY_LOCK = 0x67656E65  # pg_advisory_xact_lock key serialising the daily-cap check ("gene")
RESERVATION_TTL = "15 minutes"


def spent_today(db: Database, agent_type: str | None = None) -> float:
    """USD spent today (server's time zone) on LLM calls, optionally for one agent type's partitions."""
    sql = ("SELECT COALESCE(SUM(cost_usd), 0) AS usd FROM genepool.llm_calls"
           " WHERE created_at >= date_trunc('day', now())")
    params: tuple = ()
    if agent_type is not None:
        sql += " AND partition_key LIKE %s"
        params = (agent_type.replace("%", r"\%").replace("_", r"\_") + "/%",)
    return float(db.fetchone(sql, params)["usd"])


def reserve_daily_usd(db: Database, max_usd_per_day: float, usd: float, key: str | None) -> int | None:
    """Check today's spend (every run's calls, plus what running calls may still cost) against the cap
    and reserve ``usd`` for the call about to be made, atomically across processes. Returns the
    reservation id (release it after the call has been logged) or None when nothing was reserved."""
    with db.connection() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DAILY_LOCK,))
        row = conn.execute(
            "SELECT (SELECT COALESCE(SUM(cost_usd), 0) FROM genepool.llm_calls"
            "        WHERE created_at >= date_trunc('day', now())) AS spent,"
            "       (SELECT COALESCE(SUM(usd), 0) FROM genepool.usd_reservations"
            f"        WHERE created_at > now() - interval '{RESERVATION_TTL}') AS reserved"
        ).fetchone()
        spent = float(row["spent"]) + float(row["reserved"])
        if spent + usd > max_usd_per_day or spent >= max_usd_per_day:
            raise BudgetExceeded("max_usd_per_day", spent, usd, max_usd_per_day)
        if usd <= 0:
            return None
        return int(conn.execute(
            "INSERT INTO genepool.usd_reservations (partition_key, usd) VALUES (%s,%s) RETURNING id", (key, usd)
        ).fetchone()["id"])


def release_daily_usd(db: Database, reservation: int | None) -> None:
    if reservation is not None:
        db.execute("DELETE FROM genepool.usd_reservations WHERE id = %s", (reservation,))


# --- the partition lock ----------------------------------------------------------------------------
_LOCK_NAMESPACE = 0x67706C6B  # "gplk": advisory locks of generation partitions (classid in pg_locks)


class PartitionBusy(RuntimeError):
    """Another process holds the partition's lock: this run refused before spending anything."""


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _holder(conn: psycopg.Connection, lock_id: int) -> str:
    row = conn.execute(
        "SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.objsubid = 2 LIMIT 1",
        (_LOCK_NAMESPACE, lock_id),
    ).fetchone()
    if row is None:
        return "another process (it may just have finished)"
    since = row["backend_start"].strftime("%Y-%m-%d %H:%M:%S %Z") if row["backend_start"] else "?"
    return f"{row['application_name'] or 'a client'} (PostgreSQL backend pid {row['pid']}, connected since {since})"


@contextlib.contextmanager
def partition_lock(url: str, key: str, step: str) -> Iterator[None]:
    """Hold the session-level advisory lock of partition ``key`` on a dedicated connection, or raise
    PartitionBusy at once, naming the partition and the holder. A killed holder's lock goes with its
    connection, so a crash never leaves a partition locked."""
    name = f"genepool {key} {step} pid {os.getpid()} on {socket.gethostname()}"[:63]
    conn = psycopg.connect(url, row_factory=dict_row, autocommit=True, connect_timeout=10, application_name=name)
    lock_id = _lock_id(key)
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s) AS ok", (_LOCK_NAMESPACE, lock_id)).fetchone()["ok"]
        if not got:
            raise PartitionBusy(
                f"partition {key} is already being run by {_holder(conn, lock_id)}; this run of step {step!r} "
                "refused before making any LLM call. Wait for that run to finish (or stop it), then run again."
            )
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_NAMESPACE, lock_id))
    finally:
        conn.close()
