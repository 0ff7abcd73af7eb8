"""The prompt registry (the gene pool), in PostgreSQL.

Prompt rows are immutable (a database trigger refuses UPDATE/DELETE/TRUNCATE); labels and the
lifecycle draft -> experimental -> candidate -> production -> archived are append-only events, so
the current state of a prompt is derived from its latest event and never overwritten.

Agents fetch their prompt with ``get_prompt(agent_type, label="prod")``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from genepool.core.genome import Genome, render_template
from genepool.db import Database

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
        msgs = self.genome.messages(user_input, variables)
        msgs[0]["content"] = render_template(self.content, variables)
        return msgs

    @property
    def params(self) -> dict[str, Any]:
        p = self.genome.params
        return {"temperature": p.temperature, "max_tokens": p.max_tokens, "stop": list(p.stop)}


def prompt_id_for(agent_type: str, genome: Genome) -> str:
    digest = hashlib.sha256(f"{agent_type}\n{genome.canonical_json()}".encode()).hexdigest()
    return f"pr_{digest[:16]}"


def _record(row: dict) -> PromptRecord:
    return PromptRecord(
        id=row["id"],
        agent_type=row["agent_type"],
        version=row["version"],
        content=row["content"],
        genome=Genome.from_dict(row["genome"]),
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
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (agent_type,))
            existing = conn.execute("SELECT id FROM genepool.prompts WHERE id = %s", (pid,)).fetchone()
            if existing is None:
                version = self._next_version(conn, agent_type, generation)
                conn.execute(
                    "INSERT INTO genepool.prompts (id, agent_type, version, content, genome, parent_ids,"
                    " experiment_id, generation, operator) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        pid,
                        agent_type,
                        version,
                        genome.content(),
                        json.dumps(genome.to_dict()),
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

    def label(
        self, prompt_id: str, label: str, actor: str, reason: str = "", details: dict | None = None
    ) -> None:
        """Append a lifecycle event. ``production`` archives the agent's previous production prompt."""
        label = LABEL_ALIASES.get(label, label) or label
        if label not in LIFECYCLE:
            raise RegistryError(f"label {label!r} is not a lifecycle state; use one of {', '.join(LIFECYCLE)}")
        rec = self.get(prompt_id)
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (rec.agent_type,))
            if label == "production":
                for row in conn.execute(
                    "SELECT prompt_id FROM genepool.prompt_state WHERE agent_type = %s AND state = 'production'"
                    " AND prompt_id <> %s",
                    (rec.agent_type, prompt_id),
                ).fetchall():
                    conn.execute(
                        "INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor, reason)"
                        " VALUES (%s,%s,'archived',%s,%s)",
                        (row["prompt_id"], rec.agent_type, actor, f"replaced in production by {prompt_id}"),
                    )
            conn.execute(
                "INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor, reason, details)"
                " VALUES (%s,%s,%s,%s,%s,%s)",
                (prompt_id, rec.agent_type, label, actor, reason, json.dumps(details or {})),
            )

    def approve(self, prompt_id: str, approver: str, reason: str) -> PromptRecord:
        """Human approval: a ``candidate`` becomes ``production``; the old production is archived."""
        if not approver.strip():
            raise RegistryError("approve needs the approver's name (--by NAME)")
        rec = self.get(prompt_id)
        if rec.state != "candidate":
            raise RegistryError(
                f"prompt {prompt_id} is {rec.state!r}, not 'candidate'; only candidates can be approved"
            )
        self.label(prompt_id, "production", approver, reason)
        return self.get(prompt_id)

    def reject(self, prompt_id: str, actor: str, reason: str) -> None:
        rec = self.get(prompt_id)
        if rec.state == "production":
            raise RegistryError(f"prompt {prompt_id} is in production; approve another prompt to replace it")
        self.label(prompt_id, "rejected", actor, reason)

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

    def history(self, prompt_id: str) -> list[dict]:
        return self.db.fetchall(
            "SELECT label, actor, reason, details, created_at FROM genepool.prompt_events"
            " WHERE prompt_id = %s ORDER BY id",
            (prompt_id,),
        )
