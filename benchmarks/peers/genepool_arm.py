"""genepool arm: ``genepool.steps.optimize`` on train + validation, then best genome and front on test.

Only the train and validation items are handed to the optimiser, so the test split cannot leak.

``optimize`` keeps its state (prompts, generations, production label) in the registry, and continues
from the agent's current production prompt. So that every budget starts from the same seed prompt,
each run gets its own scratch registry database on the same PostgreSQL server (dropped afterwards);
LLM calls still go through the shared client, whose cache lives in the main database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from benchmarks.peers.common import ArmContext, ArmResult, Stopwatch, evaluate_genome, short_error
from genepool import db as postgres
from genepool.core.genome import Genome


@contextlib.contextmanager
def scratch_registry(main_url: str, label: str, owner_url: str | None = None) -> Iterator[postgres.Database]:
    """A fresh, migrated genepool database next to ``main_url``; dropped on exit.

    ``owner_url`` (a role allowed to create databases, e.g. the embedded server's owner) creates and migrates
    it; the optimiser then works in it as ``main_url``'s role, like it does in production."""
    name = "bench_" + re.sub(r"\W", "_", label)[:30] + "_" + uuid.uuid4().hex[:8]
    owner_url = owner_url or main_url
    admin = postgres._with_database(owner_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres._with_database(main_url, name)
    db = postgres.Database(url)
    try:
        if owner_url != main_url:
            postgres.migrate(postgres._with_database(owner_url, name), app_role=postgres.url_user(main_url))
        else:
            postgres.migrate(url)
        yield db
    finally:
        db.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


FRONT_TEST_MAX = 2


def _as_genome(g: Any) -> Genome:
    return g if isinstance(g, Genome) else Genome.from_dict(g)


def run(ctx: ArmContext, budget: int) -> ArmResult:
    try:
        from genepool.steps import optimize
    except ImportError as exc:
        return ArmResult("genepool", budget, "unavailable", error=f"genepool.steps.optimize: {short_error(exc)}")

    llm = ctx.metered()
    sw = Stopwatch()
    if ctx.client.db is None:
        return ArmResult("genepool", budget, "failed", error="the genepool arm needs a database (LLMClient.db)")
    try:
        with sw.lap("optimize"), llm.phase("optimize"), scratch_registry(
            ctx.client.db.url, f"{ctx.agent_type}_{budget}", ctx.options.get("owner_url")
        ) as registry_db:
            res = optimize(
                ctx.agent_type,
                llm,
                items=list(ctx.train) + list(ctx.validation),
                rollouts=budget,
                seed=ctx.seed,
                reflection_llm=None,
                db=registry_db,
            )
            history = [dataclasses.asdict(h) for h in res.history]
    except Exception as exc:  # a failure is a result, not a crash of the whole comparison
        return ArmResult(
            "genepool", budget, "failed", error=short_error(exc), optimize=llm.summary("optimize"), wall_s=sw.laps
        )

    best = _as_genome(res.best_genome)
    with sw.lap("test"):
        test = evaluate_genome(llm, ctx.test, best, purpose="bench:genepool:test")
        front = []
        seen = {best.fingerprint()}
        # test-evaluate the best genome and at most FRONT_TEST_MAX other front members (most accurate on
        # validation first, then fewest tokens): each costs a full pass over the test split
        members = sorted(res.front or [], key=lambda m: (-m.success, m.avg_tokens, m.prompt_id))
        extra_left = int(ctx.options.get("front_test_max", FRONT_TEST_MAX))
        for member in members:
            g = _as_genome(member.genome)
            entry = {
                "validation_success": member.success,
                "validation_avg_tokens": member.avg_tokens,
                "is_best": g.fingerprint() == best.fingerprint(),
            }
            if g.fingerprint() in seen and not entry["is_best"]:
                continue
            if not entry["is_best"]:
                if extra_left <= 0:
                    continue
                extra_left -= 1
            t = test if entry["is_best"] else evaluate_genome(llm, ctx.test, g, purpose="bench:genepool:test")
            seen.add(g.fingerprint())
            entry.update(test_success=t.success_rate, test_avg_tokens=t.avg_tokens, genome=g.to_dict())
            front.append(entry)
    return ArmResult(
        arm="genepool",
        budget=budget,
        status="ok",
        test=test.to_dict(),
        optimize=llm.summary("optimize"),
        wall_s=sw.laps,
        final_prompt=best.to_dict(),
        extra={"rollouts_used_reported": res.rollouts_used, "front": front, "history": history,
               "test_calls": llm.summary("test")},
    )
