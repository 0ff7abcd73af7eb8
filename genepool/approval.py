"""Human approval of candidate prompts: approve, reject, and the overview a reviewer needs.

Plain Python on top of :class:`~genepool.registry.PromptRegistry`; the CLI
(``genepool approve``), the web page (:mod:`genepool.web.app`) and the Dagster approval job all call
these functions, so the rules live in one place:

* only a ``candidate`` can be approved; it becomes ``production`` and the previous production prompt
  is archived (both as append-only events in ``genepool.prompt_events``);
* an approver's name is required; the reason is stored with the event;
* an optional hook (e.g. a push of the new production prompt to Langfuse) runs after the approval
  is committed. PostgreSQL is the source of truth: if the hook fails, the approval stands and
  :class:`ApprovalHookError` says so and carries the approved record.

``candidates_overview`` gathers, for one agent type, the production prompt and each candidate with
its scores (success rate, tokens, latency on the ``validation`` and ``test`` roles, compared with
the production prompt on the same items of the same experiment), its Pareto-front entry, lineage
and a unified diff of a readable dump of the genome against production.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from typing import Any

from genepool.db import Database
from genepool.registry import PromptRecord, PromptRegistry, RegistryError

SCORE_ROLES = ("validation", "test")
# Roles tried, in order, for the Pareto plot of the latest generation.
PLOT_ROLES = ("validation", "test", "target")


class ApprovalError(RegistryError):
    """An approval or rejection that cannot be done; the message names the field and the fix."""


class ApprovalHookError(RuntimeError):
    """The approval was committed, but the ``on_approved`` hook (e.g. Langfuse push) failed."""

    def __init__(self, record: PromptRecord, cause: BaseException):
        self.record = record
        self.cause = cause
        super().__init__(
            f"prompt {record.id} ({record.agent_type} v{record.version}) is approved and in production, "
            f"but the post-approval hook failed: {type(cause).__name__}: {cause}. "
            "The registry is the source of truth; re-run the push (e.g. Langfuse) once it is reachable."
        )


# --- approve / reject ------------------------------------------------------------------------------
def _require(value: str | None, field: str, fix: str) -> str:
    if value is None or not str(value).strip():
        raise ApprovalError(f"{field} is required: {fix}")
    return str(value).strip()


def langfuse_hook(langfuse: Any) -> Callable[[PromptRecord], Any] | None:
    """Turn ``langfuse`` into an ``on_approved(record)`` callable.

    Accepts a callable (used as is), or an object with ``push_prompt(name, content, labels, config)``
    (the Langfuse resource); an object whose ``enabled`` is false gives ``None`` (nothing to push).
    """
    if langfuse is None:
        return None
    if callable(langfuse) and not hasattr(langfuse, "push_prompt"):
        return langfuse
    if not hasattr(langfuse, "push_prompt"):
        raise TypeError(
            "langfuse must be a callable on_approved(record) or an object with push_prompt(name, content, "
            f"labels, config); got {type(langfuse).__name__}"
        )
    if getattr(langfuse, "enabled", True) is False:
        return None

    def push(record: PromptRecord) -> Any:
        return langfuse.push_prompt(
            name=record.agent_type,
            content=record.content,
            labels=["production"],
            config={
                "prompt_id": record.id,
                "version": record.version,
                "params": record.params,
                "examples": [{"input": e.input, "output": e.output} for e in record.genome.examples],
                "example_format": record.genome.example_format,
                # > 0: the examples are a pool; send only that many nearest the input (genepool.core.genome)
                "example_select": record.genome.example_select,
            },
        )

    return push


def approve(
    db: Database,
    prompt_id: str,
    approver: str,
    reason: str = "",
    *,
    langfuse: Any = None,
    on_approved: Callable[[PromptRecord], Any] | None = None,
) -> PromptRecord:
    """Approve a candidate: it becomes ``production``, the old production prompt is archived.

    ``langfuse`` / ``on_approved``: optional hooks called with the new production record after the
    approval is committed (see :func:`langfuse_hook`). A failing hook raises
    :class:`ApprovalHookError`, which carries the (committed) record.
    """
    prompt_id = _require(prompt_id, "prompt id", "pass the id of a candidate prompt (e.g. pr_0123456789abcdef)")
    approver = _require(approver, "approver", "give the approver's name (--by NAME, or the Approver field)")
    hooks = [h for h in (langfuse_hook(langfuse), on_approved) if h is not None]  # bad hooks fail before
    reg = PromptRegistry(db)
    reg.get(prompt_id)  # "no prompt with id ..." before anything else
    try:  # the state is checked inside the agent's locked transaction that writes the events
        record = reg.approve(prompt_id, approver, (reason or "").strip())
    except RegistryError as exc:
        raise ApprovalError(str(exc)) from None
    for hook in hooks:
        try:
            hook(record)
        except Exception as exc:  # the approval itself is committed; report, do not hide
            raise ApprovalHookError(record, exc) from exc
    return record


def reject(db: Database, prompt_id: str, actor: str, reason: str = "") -> PromptRecord:
    """Reject a prompt that is not in production (typically a candidate); returns the updated record."""
    prompt_id = _require(prompt_id, "prompt id", "pass the id of a candidate prompt")
    actor = _require(actor, "approver", "give the reviewer's name (--by NAME, or the Approver field)")
    reg = PromptRegistry(db)
    reg.get(prompt_id)  # "no prompt with id ..." before anything else
    try:  # the state is checked inside the agent's locked transaction that writes the event
        reg.reject(prompt_id, actor, (reason or "").strip())
    except RegistryError as exc:
        raise ApprovalError(str(exc)) from None
    return reg.get(prompt_id)


# --- overview ----------------------------------------------------------------------------------------
def genome_dump(record: PromptRecord) -> str:
    """A readable dump of a prompt for diffs: system template, few-shot turns, decoding params."""
    g = record.genome

    def block(text: str, indent: str = "    ") -> list[str]:
        return [indent + line for line in (text.splitlines() or [""])]

    lines = ["[system]", *block(record.content), ""]
    if g.examples:
        where = "turns" if g.example_format == "turns" else "inline in the system message"
        if g.example_select:
            where = f"a pool; each request shows the {g.example_select} whose input is nearest its own, as turns"
        lines.append(f"[few-shot examples: {where}]")
        for i, e in enumerate(g.examples, 1):
            lines.append(f"  #{i} user:")
            lines += block(e.input, "      ")
            lines.append(f"  #{i} assistant:")
            lines += block(e.output, "      ")
        lines.append("")
    else:
        lines += ["[few-shot examples: none]", ""]
    p = g.params
    lines += [
        "[params]",
        f"    temperature: {p.temperature}",
        f"    max_tokens: {p.max_tokens}",
        f"    stop: {json.dumps(list(p.stop), ensure_ascii=False)}",
        f"    example_format: {g.example_format}",
    ]
    if g.example_select:
        lines.append(f"    example_select: {g.example_select}")
    return "\n".join(lines) + "\n"


def prompt_diff(base: PromptRecord | None, other: PromptRecord, context: int = 3) -> str:
    """Unified diff of ``genome_dump(base)`` -> ``genome_dump(other)`` (empty string if identical)."""
    a = genome_dump(base).splitlines(keepends=True) if base else []
    b = genome_dump(other).splitlines(keepends=True)
    from_name = f"production {base.id} v{base.version}" if base else "(no production prompt)"
    return "".join(
        difflib.unified_diff(a, b, fromfile=from_name, tofile=f"candidate {other.id} v{other.version}", n=context)
    )


def _stats(rows: list[dict]) -> dict[str, Any] | None:
    if not rows:
        return None
    n = len(rows)
    return {
        "n": n,
        "successes": sum(1 for r in rows if r["success"]),
        "success_rate": sum(1 for r in rows if r["success"]) / n,
        "avg_tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) / n,
        "avg_prompt_tokens": sum(r["prompt_tokens"] for r in rows) / n,
        "avg_completion_tokens": sum(r["completion_tokens"] for r in rows) / n,
        "avg_latency_ms": sum(r["latency_ms"] for r in rows) / n,
        "avg_score": sum(r["score"] for r in rows) / n,
    }


def _results(db: Database, experiment_id: str, prompt_id: str, role: str) -> dict[str, dict]:
    rows = db.fetchall(
        "SELECT item_id, success, score, prompt_tokens, completion_tokens, latency_ms FROM genepool.experiment_results"
        " WHERE experiment_id = %s AND prompt_id = %s AND role = %s ORDER BY item_id",
        (experiment_id, prompt_id, role),
    )
    return {r["item_id"]: r for r in rows}


def compare_on_role(
    db: Database, experiment_id: str, candidate_id: str, production_id: str | None, role: str
) -> dict[str, Any] | None:
    """Candidate vs production on one role of one experiment, on the items both were run on.

    Returns None when the candidate has no results for that role. When production was not run on
    any of the candidate's items, ``production`` is None and the candidate is scored on all its items.
    """
    cand = _results(db, experiment_id, candidate_id, role)
    if not cand:
        return None
    prod = _results(db, experiment_id, production_id, role) if production_id else {}
    common = sorted(set(cand) & set(prod))
    if common:
        c_stats = _stats([cand[i] for i in common])
        p_stats = _stats([prod[i] for i in common])
        wins = sum(1 for i in common if cand[i]["success"] and not prod[i]["success"])
        losses = sum(1 for i in common if prod[i]["success"] and not cand[i]["success"])
        delta = {k: c_stats[k] - p_stats[k] for k in ("success_rate", "avg_tokens", "avg_latency_ms", "avg_score")}
        note = "" if len(common) == len(cand) else f"compared on the {len(common)} of {len(cand)} items both ran"
    else:
        c_stats, p_stats, wins, losses, delta = _stats(list(cand.values())), None, None, None, None
        note = "production was not evaluated on these items in this experiment"
    return {
        "role": role,
        "experiment_id": experiment_id,
        "items": len(common) if common else len(cand),
        "candidate": c_stats,
        "production": p_stats,
        "delta": delta,
        "wins": wins,
        "losses": losses,
        "note": note,
    }


def _evaluation_experiment(db: Database, record: PromptRecord) -> str | None:
    """The latest experiment in which the prompt was scored on validation/test (else its own experiment)."""
    row = db.fetchone(
        "SELECT r.experiment_id FROM genepool.experiment_results r"
        " JOIN genepool.experiments e ON e.id = r.experiment_id"
        " WHERE r.prompt_id = %s AND r.role = ANY(%s)"
        " ORDER BY e.generation DESC, e.created_at DESC, e.id DESC LIMIT 1",
        (record.id, list(SCORE_ROLES)),
    )
    return row["experiment_id"] if row else record.experiment_id


def _front(db: Database, prompt_id: str) -> dict | None:
    """The prompt's latest Pareto-front entry (genepool.front_members), if any."""
    return db.fetchone(
        "SELECT f.experiment_id, f.rank, f.success_rate, f.avg_tokens, f.avg_latency_ms,"
        " f.control_regressions, f.feasible FROM genepool.front_members f"
        " JOIN genepool.experiments e ON e.id = f.experiment_id"
        " WHERE f.prompt_id = %s ORDER BY e.generation DESC, e.created_at DESC, e.id DESC LIMIT 1",
        (prompt_id,),
    )


def _summary(rec: PromptRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "version": rec.version,
        "state": rec.state,
        "generation": rec.generation,
        "operator": rec.operator,
        "experiment_id": rec.experiment_id,
        "created_at": rec.created_at,
    }


def pareto_points(db: Database, agent_type: str, states: dict[str, str] | None = None) -> dict[str, Any]:
    """Success rate vs average tokens of every prompt evaluated in the agent's latest generation.

    Uses the first role of ``PLOT_ROLES`` with results in that experiment; ``on_front`` marks the
    prompts listed in genepool.front_members for that experiment.
    """
    exp = db.fetchone(
        "SELECT e.id, e.generation FROM genepool.experiments e WHERE e.agent_type = %s"
        " AND EXISTS (SELECT 1 FROM genepool.experiment_results r WHERE r.experiment_id = e.id)"
        " ORDER BY e.generation DESC, e.created_at DESC, e.id DESC LIMIT 1",
        (agent_type,),
    )
    if exp is None:
        return {"experiment_id": None, "generation": None, "role": None, "points": []}
    front = {
        r["prompt_id"]: r
        for r in db.fetchall("SELECT * FROM genepool.front_members WHERE experiment_id = %s", (exp["id"],))
    }
    for role in PLOT_ROLES:
        rows = db.fetchall(
            "SELECT r.prompt_id, p.version, count(*) AS n,"
            " avg(CASE WHEN r.success THEN 1.0 ELSE 0.0 END)::float8 AS success_rate,"
            " avg(r.prompt_tokens + r.completion_tokens)::float8 AS avg_tokens,"
            " avg(r.latency_ms)::float8 AS avg_latency_ms"
            " FROM genepool.experiment_results r JOIN genepool.prompts p ON p.id = r.prompt_id"
            " WHERE r.experiment_id = %s AND r.role = %s GROUP BY r.prompt_id, p.version ORDER BY r.prompt_id",
            (exp["id"], role),
        )
        if rows:
            break
    states = states or {}
    points = [{**r, "on_front": r["prompt_id"] in front, "state": states.get(r["prompt_id"])} for r in rows]
    return {
        "experiment_id": exp["id"],
        "generation": exp["generation"],
        "role": role if rows else None,
        "points": points,
    }


def candidates_overview(db: Database, agent_type: str) -> dict[str, Any]:
    """Everything a reviewer needs to approve or reject the candidates of one agent type.

    Returns ``{"agent_type", "production": {...} | None, "candidates": [...], "pareto": {...},
    "recent_events": [...]}``. Each candidate has ``id, version, state, generation, operator,
    experiment_id, created_at, parents`` (direct parents), ``lineage`` (all ancestors, nearest first),
    ``scores`` (role -> :func:`compare_on_role`), ``front`` (latest front_members row or None),
    ``diff`` (unified diff vs production) and ``dump`` (readable genome dump).
    """
    agent_type = _require(agent_type, "agent type", "pass an agent type such as 'support-desk'")
    reg = PromptRegistry(db)
    all_prompts = reg.list(agent_type)
    if not all_prompts:
        known = [r["agent_type"] for r in db.fetchall("SELECT DISTINCT agent_type FROM genepool.prompts ORDER BY 1")]
        raise ApprovalError(
            f"agent type {agent_type!r} has no prompts; known agent types: {', '.join(known) or '(none yet)'}"
        )
    try:
        prod = reg.get_prompt(agent_type, "prod")
    except RegistryError:
        prod = None
    states = {p.id: p.state for p in all_prompts}

    production = None
    if prod is not None:
        production = {
            **_summary(prod),
            "dump": genome_dump(prod),
            "front": _front(db, prod.id),
            "parents": list(prod.parent_ids),
        }

    candidates = []
    for rec in reg.list(agent_type, "candidate"):
        exp_id = _evaluation_experiment(db, rec)
        scores = {}
        if exp_id:
            for role in SCORE_ROLES:
                cmp = compare_on_role(db, exp_id, rec.id, prod.id if prod else None, role)
                if cmp is not None:
                    scores[role] = cmp
        lineage = reg.lineage(rec.id)[1:]
        candidates.append(
            {
                **_summary(rec),
                "evaluation_experiment_id": exp_id,
                "parents": list(rec.parent_ids),
                "lineage": [{**_summary(a)} for a in lineage],
                "scores": scores,
                "front": _front(db, rec.id),
                "diff": prompt_diff(prod, rec),
                "dump": genome_dump(rec),
            }
        )

    def sort_key(c: dict) -> tuple:
        v = c["scores"].get("validation")
        sr = v["candidate"]["success_rate"] if v else -1.0
        tok = v["candidate"]["avg_tokens"] if v else float("inf")
        return (-sr, tok, c["id"])

    candidates.sort(key=sort_key)
    recent = db.fetchall(
        "SELECT e.prompt_id, p.version, e.label, e.actor, e.reason, e.created_at FROM genepool.prompt_events e"
        " JOIN genepool.prompts p ON p.id = e.prompt_id"
        " WHERE e.agent_type = %s AND e.label IN ('production', 'archived', 'rejected', 'candidate')"
        " ORDER BY e.id DESC LIMIT 12",
        (agent_type,),
    )
    return {
        "agent_type": agent_type,
        "production": production,
        "candidates": candidates,
        "pareto": pareto_points(db, agent_type, states),
        "recent_events": recent,
    }


def agents_summary(db: Database) -> list[dict[str, Any]]:
    """One row per agent type that has prompts: production version and number of candidates."""
    return db.fetchall(
        """
        SELECT s.agent_type,
               max(a.description) AS description,
               count(*) FILTER (WHERE s.state = 'candidate') AS candidates,
               count(*) AS prompts,
               max(s.version) FILTER (WHERE s.state = 'production') AS production_version,
               max(s.prompt_id) FILTER (WHERE s.state = 'production') AS production_id
        FROM genepool.prompt_state s
        LEFT JOIN genepool.agents a ON a.agent_type = s.agent_type
        GROUP BY s.agent_type
        ORDER BY count(*) FILTER (WHERE s.state = 'candidate') DESC, s.agent_type
        """
    )
