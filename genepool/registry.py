"""The prompt registry (the gene pool), in PostgreSQL.

Prompt rows are immutable (a database trigger refuses UPDATE/DELETE/TRUNCATE); labels and the
lifecycle draft -> experimental -> candidate -> production -> archived are append-only events, so
the current state of a prompt is derived from its latest event and never overwritten.

Agents fetch their prompt with ``get_prompt(agent_type, label="prod")``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from genepool.core.genome import Genome, GenomeError, render_template
from genepool.db import Database

log = logging.getLogger(__name__)

LIFECYCLE = ("draft", "experimental", "candidate", "production", "archived", "rejected")
LABEL_ALIASES = {"prod": "production", "production": "production", "latest": None}


class RegistryError(LookupError):
    """A registry lookup or transition that cannot be done; the message says what to do instead."""


@dataclass(frozen=True)
class PromptRecord:
    id: str
    agent_type: str
    version: str
    content: str
    genome: Genome
    parent_ids: tuple[str, ...]
    experiment_id: str | None
    generation: int
    operator: str
    created_at: datetime
    state: str | None = None

    def render(self, user_input: str, variables: dict[str, Any] | None = None) -> list[dict[str, str]]:
        """Chat messages for one request (system from the stored template, few-shot turns, user)."""
        values = {"agent_type": self.agent_type, **(variables or {})}
        try:
            msgs = self.genome.messages(user_input, values)
        except GenomeError as exc:  # a row that never passed the sanity check (written outside genepool)
            raise GenomeError(f"prompt {self.id}: {exc}") from None
        msgs[0]["content"] = render_stored_content(self.id, self.content, values)
        return msgs

    @property
    def params(self) -> dict[str, Any]:
        p = self.genome.params
        return {"temperature": p.temperature, "max_tokens": p.max_tokens, "stop": list(p.stop)}


def render_stored_content(prompt_id: str, content: str, values: dict[str, Any]) -> str:
    """A stored prompt's content rendered in the sandbox; a row that never passed the sanity check (too large,
    control characters, an injection phrase, a template the sandbox refuses) raises GenomeError naming it."""
    from genepool.core.sanity import injection_phrase
    from genepool.validation import MAX_GENOME_CHARS, text_problem

    where = f"prompt {prompt_id} content"
    problem = text_problem(content, MAX_GENOME_CHARS)
    if problem:
        raise GenomeError(f"{where}: {problem}; the row was not written by genepool (check genepool.prompts)")
    phrase = injection_phrase(content)
    if phrase:
        raise GenomeError(f"{where}: injection phrase {phrase!r}; the row was not written by genepool")
    return render_template(content, values, field=where)


def prompt_id_for(agent_type: str, genome: Genome) -> str:
    """``pr_`` + 16 hex of sha256(agent type, newline, canonical genome JSON); the database computes the same
    from ``genome_canonical`` (genepool.prompt_id_of in migration 0004) and refuses a row whose id differs."""
    digest = hashlib.sha256(f"{agent_type}\n{genome.canonical_json()}".encode()).hexdigest()
    return f"pr_{digest[:16]}"


# The lifecycle: forward along ORDER (steps may be skipped, e.g. a seed goes draft -> production), rejected only
# before production, archived only from production, nothing after archived or rejected. The database applies
# the same table (genepool.lifecycle_move_allowed); tests compare the two on every pair.
ORDER = ("draft", "experimental", "candidate", "production")
REJECTABLE = ("draft", "experimental", "candidate")


def transition_allowed(current: str | None, new: str) -> bool:
    """Whether a prompt in state ``current`` (None: no event yet) may move to ``new``."""
    if new == "rejected":
        return current in REJECTABLE
    if new == "archived":
        return current == "production"
    if new not in ORDER:
        return False
    if current is None:
        return new in REJECTABLE
    if current not in REJECTABLE:
        return False
    return ORDER.index(new) > ORDER.index(current)


def _refusal(rec: PromptRecord, current: str | None, new: str, only_from: tuple[str, ...] | None) -> str:
    where = f"prompt {rec.id} ({rec.agent_type} v{rec.version}) is {current!r}"
    if new == "production" and only_from == ("candidate",):
        return (
            f"{where}, not 'candidate'; only candidates can be approved "
            "(list them with `genepool prompts --state candidate`)"
        )
    if new == "rejected" and current == "rejected":
        return f"prompt {rec.id} is already rejected; nothing to do"
    if new == "rejected" and current == "production":
        return f"prompt {rec.id} is in production and cannot be rejected; approve another candidate to replace it"
    if new == "rejected":
        return f"{where}; only a draft, experimental or candidate prompt can be rejected"
    return (
        f"{where} and cannot move to {new!r}: the lifecycle is draft -> experimental -> candidate -> "
        "production -> archived, rejected only before production"
    )


_content_warned: set[str] = set()


def _record(row: dict) -> PromptRecord:
    """A row as a record, after checking it is what genepool wrote: its id is its genome's hash (rows older than
    migration 0004 were never checked by the database). The content served is the genome's own template."""
    genome = Genome.from_dict(row["genome"])
    canonical = row.get("genome_canonical")  # checked by the database on insert (migration 0004)
    if canonical is not None:
        digest = hashlib.sha256(f"{row['agent_type']}\n{canonical}".encode()).hexdigest()
        hashed_ok = f"pr_{digest[:16]}" == row["id"] and json.loads(canonical) == row["genome"]
    else:
        hashed_ok = prompt_id_for(row["agent_type"], genome) == row["id"]
    if not hashed_ok:
        raise RegistryError(
            f"prompt {row['id']!r} in genepool.prompts is not the hash of its genome (a row written outside "
            "genepool?); it is not served: register the genome again with PromptRegistry.register"
        )
    content = genome.content()  # what is served comes from the verified genome, never from the content column
    if row["content"] != content and row["id"] not in _content_warned:
        _content_warned.add(row["id"])
        log.warning(
            "prompt %s: the stored content differs from its genome's template (written outside genepool, or by an "
            "older version); serving the genome's",
            row["id"],
        )
    return PromptRecord(
        id=row["id"],
        agent_type=row["agent_type"],
        version=row["version"],
        content=content,
        genome=genome,
        parent_ids=tuple(row["parent_ids"] or ()),
        experiment_id=row["experiment_id"],
        generation=row["generation"],
        operator=row["operator"],
        created_at=row["created_at"],
        state=row.get("state"),
    )


_SELECT = """
SELECT p.*, s.state FROM genepool.prompts p
JOIN genepool.prompt_state s ON s.prompt_id = p.id
"""


class PromptRegistry:
    def __init__(self, db: Database):
        self.db = db

    # --- writes -------------------------------------------------------------------------------
    def register(
        self,
        agent_type: str,
        genome: Genome,
        *,
        parent_ids: tuple[str, ...] | list[str] = (),
        experiment_id: str | None = None,
        generation: int = 0,
        operator: str = "seed",
        actor: str = "genepool",
        label: str = "draft",
        reason: str = "",
    ) -> PromptRecord:
        """Store a prompt (idempotent: the same agent and genome give the same id and row)."""
        pid = prompt_id_for(agent_type, genome)
        canonical = genome.canonical_json()
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (agent_type,))
            existing = conn.execute("SELECT id FROM genepool.prompts WHERE id = %s", (pid,)).fetchone()
            if existing is None:
                version = self._next_version(conn, agent_type, generation)
                conn.execute(
                    "INSERT INTO genepool.prompts (id, agent_type, version, content, genome, genome_canonical,"
                    " parent_ids, experiment_id, generation, operator) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        pid,
                        agent_type,
                        version,
                        genome.content(),
                        canonical,
                        canonical,
                        list(parent_ids),
                        experiment_id,
                        generation,
                        operator,
                    ),
                )
                conn.execute(
                    "INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor, reason)"
                    " VALUES (%s,%s,%s,%s,%s)",
                    (pid, agent_type, label, actor, reason or f"registered by {operator}"),
                )
        return self.get(pid)

    @staticmethod
    def _next_version(conn, agent_type: str, generation: int) -> str:
        """Semver MAJOR.GENERATION.N: the N-th prompt made in that generation of the agent."""
        n = conn.execute(
            "SELECT count(*) AS n FROM genepool.prompts WHERE agent_type = %s AND generation = %s",
            (agent_type, generation),
        ).fetchone()["n"]
        return f"1.{generation}.{n}"

    def label(self, prompt_id: str, label: str, actor: str, reason: str = "", details: dict | None = None) -> None:
        """Append a lifecycle event, checked against the lifecycle inside the agent's locked transaction.

        ``production`` archives the agent's previous production prompt in the same transaction.
        """
        self._move(prompt_id, label, actor, reason, details)

    def _move(
        self,
        prompt_id: str,
        label: str,
        actor: str,
        reason: str = "",
        details: dict | None = None,
        *,
        only_from: tuple[str, ...] | None = None,
    ) -> str | None:
        """Check and append one transition under the agent's advisory lock; returns the state it left.

        The current state is read after the lock is taken, in the transaction that writes the event, so two
        concurrent moves of one agent's prompts are serialised and the second sees the first's result. The
        database checks the same rules again (migration 0004), whoever writes the event.
        """
        label = LABEL_ALIASES.get(label, label) or label
        if label not in LIFECYCLE:
            raise RegistryError(f"label {label!r} is not a lifecycle state; use one of {', '.join(LIFECYCLE)}")
        rec = self.get(prompt_id)  # agent_type never changes (rows are immutable)
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (rec.agent_type,))
            row = conn.execute(
                "SELECT label FROM genepool.prompt_events WHERE prompt_id = %s ORDER BY id DESC LIMIT 1",
                (prompt_id,),
            ).fetchone()
            current = row["label"] if row else None
            if only_from is not None and current not in only_from:
                raise RegistryError(_refusal(rec, current, label, only_from))
            if not transition_allowed(current, label):
                raise RegistryError(_refusal(rec, current, label, None))
            if label == "production":
                for old in conn.execute(
                    "SELECT prompt_id FROM genepool.prompt_state WHERE agent_type = %s AND state = 'production'"
                    " AND prompt_id <> %s",
                    (rec.agent_type, prompt_id),
                ).fetchall():
                    conn.execute(
                        "INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor, reason)"
                        " VALUES (%s,%s,'archived',%s,%s)",
                        (old["prompt_id"], rec.agent_type, actor, f"replaced in production by {prompt_id}"),
                    )
            conn.execute(
                "INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor, reason, details)"
                " VALUES (%s,%s,%s,%s,%s,%s)",
                (prompt_id, rec.agent_type, label, actor, reason, json.dumps(details or {})),
            )
        return current

    def seed_production(self, agent_type: str, genome: Genome, actor: str, reason: str) -> PromptRecord:
        """The agent's production prompt; its seed genome goes to production only if the agent has no prompt at
        all. An agent with prompts but none in production is an error naming the fix, never a silent re-seed
        (that would put the seed back in production behind the reviewers' backs). Atomic under the agent's lock.
        """
        pid = prompt_id_for(agent_type, genome)
        canonical = genome.canonical_json()
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (agent_type,))
            states = conn.execute(
                "SELECT prompt_id, state FROM genepool.prompt_state WHERE agent_type = %s"
                " ORDER BY created_at, prompt_id",
                (agent_type,),
            ).fetchall()
            prod = [r["prompt_id"] for r in states if r["state"] == "production"]
            if not prod and states:
                cands = [r["prompt_id"] for r in states if r["state"] == "candidate"]
                raise RegistryError(
                    f"agent {agent_type!r} has {len(states)} prompts but none in production; genepool does not "
                    "re-seed it silently: approve one with `genepool approve PROMPT_ID --by NAME --reason TEXT` "
                    f"(candidates: {', '.join(cands) or 'none; run a generation to propose some'})"
                )
            if not prod:
                conn.execute(
                    "INSERT INTO genepool.prompts (id, agent_type, version, content, genome, genome_canonical,"
                    " parent_ids, experiment_id, generation, operator) VALUES (%s,%s,%s,%s,%s,%s,'{}',NULL,0,'seed')",
                    (pid, agent_type, self._next_version(conn, agent_type, 0), genome.content(), canonical, canonical),
                )
                for label, why in (("draft", "registered by seed"), ("production", reason)):
                    conn.execute(
                        "INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor, reason)"
                        " VALUES (%s,%s,%s,%s,%s)",
                        (pid, agent_type, label, actor, why),
                    )
                prod = [pid]
        return self.get(prod[0])

    def approve(self, prompt_id: str, approver: str, reason: str) -> PromptRecord:
        """Human approval: a ``candidate`` becomes ``production``; the old production is archived.

        The candidate state is checked inside the locked transaction that writes the events.
        """
        if not approver.strip():
            raise RegistryError("approve needs the approver's name (--by NAME)")
        self._move(prompt_id, "production", approver, reason, only_from=("candidate",))
        return self.get(prompt_id)

    def reject(self, prompt_id: str, actor: str, reason: str) -> None:
        """A person's rejection of a prompt not yet in production (checked inside the locked transaction)."""
        if not actor.strip():
            raise RegistryError("reject needs the reviewer's name (--by NAME)")
        self._move(prompt_id, "rejected", actor, reason, only_from=REJECTABLE)

    # --- reads --------------------------------------------------------------------------------
    def get(self, prompt_id: str) -> PromptRecord:
        row = self.db.fetchone(_SELECT + " WHERE p.id = %s", (prompt_id,))
        if row is None:
            raise RegistryError(f"no prompt with id {prompt_id!r}; list them with `genepool prompts`")
        return _record(row)

    def get_prompt(self, agent_type: str, label: str = "prod") -> PromptRecord:
        """The prompt an agent should use: by default the one in production."""
        state = LABEL_ALIASES.get(label, label)
        if label == "latest":
            row = self.db.fetchone(
                _SELECT + " WHERE p.agent_type = %s ORDER BY p.created_at DESC, p.id LIMIT 1", (agent_type,)
            )
        else:
            if state not in LIFECYCLE:
                raise RegistryError(f"label {label!r} is unknown; use prod, latest or one of {', '.join(LIFECYCLE)}")
            row = self.db.fetchone(
                _SELECT + " WHERE p.agent_type = %s AND s.state = %s ORDER BY s.state_since DESC LIMIT 1",
                (agent_type, state),
            )
        if row is None:
            raise RegistryError(
                f"agent {agent_type!r} has no prompt labelled {label!r}; seed it with `genepool seed` "
                "or approve a candidate with `genepool approve`"
            )
        return _record(row)

    def list(self, agent_type: str | None = None, state: str | None = None) -> list[PromptRecord]:
        sql, params = _SELECT + " WHERE true", []
        if agent_type:
            sql += " AND p.agent_type = %s"
            params.append(agent_type)
        if state:
            sql += " AND s.state = %s"
            params.append(LABEL_ALIASES.get(state, state))
        return [_record(r) for r in self.db.fetchall(sql + " ORDER BY p.created_at, p.id", tuple(params))]

    def lineage(self, prompt_id: str) -> list[PromptRecord]:
        """The prompt and all its ancestors, nearest first (breadth-first over parent_ids)."""
        rows = self.db.fetchall(
            """
            WITH RECURSIVE anc(id, depth) AS (
                SELECT id, 0 FROM genepool.prompts WHERE id = %s
                UNION
                SELECT parent, anc.depth + 1 FROM anc
                JOIN genepool.prompts p ON p.id = anc.id
                CROSS JOIN LATERAL unnest(p.parent_ids) AS parent
            )
            SELECT p.*, s.state, min(anc.depth) AS depth FROM anc
            JOIN genepool.prompts p ON p.id = anc.id
            JOIN genepool.prompt_state s ON s.prompt_id = p.id
            GROUP BY p.id, s.state ORDER BY depth, p.id
            """,
            (prompt_id,),
        )
        if not rows:
            raise RegistryError(f"no prompt with id {prompt_id!r}")
        return [_record(r) for r in rows]

    def decisions(self, prompt_ids: list[str] | tuple[str, ...]) -> dict[str, list[dict]]:
        """Who put each prompt in production, rejected or archived it, and why (oldest first)."""
        out: dict[str, list[dict]] = {pid: [] for pid in prompt_ids}
        for r in self.db.fetchall(
            "SELECT prompt_id, label, actor, reason, created_at FROM genepool.prompt_events"
            " WHERE prompt_id = ANY(%s) AND label IN ('production', 'rejected', 'archived') ORDER BY id",
            (list(prompt_ids),),
        ):
            out[r.pop("prompt_id")].append(r)
        return out

    def history(self, prompt_id: str) -> list[dict]:
        return self.db.fetchall(
            "SELECT label, actor, reason, details, created_at FROM genepool.prompt_events"
            " WHERE prompt_id = %s ORDER BY id",
            (prompt_id,),
        )
