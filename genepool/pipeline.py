"""One optimisation generation as plain functions (no Dagster): the assets call these.

    traces -> failure_clusters -> mutated_population -> experiment_results -> pareto_front -> promoted_prompts

Each step reads what it needs from its inputs and PostgreSQL, writes its rows, and returns a small
JSON-friendly value. All randomness comes from ``generation_rng(seed, agent, generation)`` and every
LLM call goes through the PostgreSQL cache, so re-running a partition gives byte-identical values
and makes no new LLM call. ``optimize`` chains the steps over several generations without Dagster
(used by the side-by-side benchmark).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from genepool.agents import AgentSpec, get_agent, load_agent_benchmark
from genepool.core.benchmark import Item, split_items
from genepool.settings import GenerationConfig
from genepool.core.budget import Budget, BudgetExceeded, BudgetTracker, check_daily_cap
from genepool.core.clustering import cluster_failures
from genepool.core.evolution import BreedContext, breed, generation_rng
from genepool.core.genome import Genome
from genepool.core.sanity import sanity_check
from genepool.core.selection import (
    control_regressions,
    hypervolume,
    objectives,
    pareto_front,
    per_instance_survivors,
    rank_all,
    raw_objectives,
)
from genepool.core.trace_schema import quarantine, store_traces, validate_traces
from genepool.core.types import CandidateEval, ItemOutcome
from genepool.llm import LLMClient
from genepool.db import Database
from genepool.registry import PromptRecord, PromptRegistry
from genepool.runner import BenchmarkRunner, ItemResult

log = logging.getLogger(__name__)

SEED_ACTOR = "genepool-seed"
OPTIMISER_ACTOR = "genepool"


@dataclass
class Generation:
    """Everything a step needs: database, LLMs, the agent, its benchmark and the partition."""

    db: Database
    llm: LLMClient
    agent_type: str
    generation: int
    config: GenerationConfig = field(default_factory=GenerationConfig)
    reflection_llm: LLMClient | None = None
    items: list[Item] | None = None

    def __post_init__(self) -> None:
        self.agent: AgentSpec = get_agent(self.agent_type)
        if self.items is None:
            self.items = load_agent_benchmark(self.agent_type)
        self.registry = PromptRegistry(self.db)
        self.key = f"{self.agent_type}/g{self.generation:04d}"
        self.by_id = {i.id: i for i in self.items}
        ensure_agent(self.db, self.agent)
        ensure_experiment(self.db, self)

    @property
    def experiment_id(self) -> str:
        return self.key

    def rng(self, step: str):
        return generation_rng(self.config.seed, f"{self.agent_type}:{step}", self.generation)

    # --- budget bookkeeping ----------------------------------------------------------------
    def tracker(self, step: str) -> BudgetTracker:
        if self.config.max_usd_per_day is not None:
            check_daily_cap(self.db, self.config.max_usd_per_day, self.agent_type)
        rows = self.db.fetchall(
            "SELECT step, rollouts, tokens, usd FROM genepool.generation_spend WHERE experiment_id = %s AND step <> %s",
            (self.key, step),
        )
        spent = {
            "rollouts": sum(r["rollouts"] for r in rows),
            "tokens": sum(int(r["tokens"]) for r in rows),
            "usd": sum(float(r["usd"]) for r in rows),
        }
        return BudgetTracker(self.config.budget(), spent=spent)

    def record_spend(self, step: str, tracker: BudgetTracker, before: dict[str, float], calls_made: int) -> dict:
        spend = {k: tracker.spent[k] - before[k] for k in ("rollouts", "tokens", "usd")}
        self.db.execute(
            "INSERT INTO genepool.generation_spend (experiment_id, step, rollouts, tokens, usd, llm_calls)"
            " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (experiment_id, step) DO UPDATE SET"
            " rollouts = EXCLUDED.rollouts, tokens = EXCLUDED.tokens, usd = EXCLUDED.usd,"
            " llm_calls = EXCLUDED.llm_calls, updated_at = now()",
            (self.key, step, int(spend["rollouts"]), int(spend["tokens"]), float(spend["usd"]), calls_made),
        )
        return {**spend, "llm_calls": calls_made}

    def runner(self, tracker: BudgetTracker | None) -> BenchmarkRunner:
        return BenchmarkRunner(self.llm, tracker, partition_key=self.key)


def ensure_agent(db: Database, agent: AgentSpec) -> None:
    db.execute(
        "INSERT INTO genepool.agents (agent_type, description, benchmark_path) VALUES (%s,%s,%s)"
        " ON CONFLICT (agent_type) DO NOTHING",
        (agent.agent_type, agent.description, str(agent.benchmark_path)),
    )


def ensure_experiment(db: Database, gen: Generation) -> None:
    db.execute(
        "INSERT INTO genepool.experiments (id, agent_type, generation, seed, config) VALUES (%s,%s,%s,%s,%s)"
        " ON CONFLICT (id) DO NOTHING",
        (gen.key, gen.agent_type, gen.generation, gen.config.seed, json.dumps(gen.config.to_dict())),
    )


def ensure_production(registry: PromptRegistry, agent: AgentSpec) -> PromptRecord:
    """The agent's production prompt; the seed genome is registered and put in production if none is."""
    try:
        return registry.get_prompt(agent.agent_type, "prod")
    except LookupError:
        rec = registry.register(agent.agent_type, agent.seed_genome, operator="seed", reason="seed prompt")
        registry.label(rec.id, "production", SEED_ACTOR, "seed prompt of the agent type")
        return registry.get(rec.id)


def _stratified(items: list[Item], n: int, rng) -> list[Item]:
    """``n`` items spread evenly over tasks, deterministic for a given rng; 0 or too many = all."""
    by_task: dict[str, list[Item]] = defaultdict(list)
    for it in sorted(items, key=lambda i: i.id):
        by_task[it.task].append(it)
    for task in sorted(by_task):
        rng.shuffle(by_task[task])
    if n <= 0 or n >= len(items):
        return [it for t in sorted(by_task) for it in by_task[t]]
    out: list[Item] = []
    queues = [by_task[t] for t in sorted(by_task)]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _trace_id(key: str, prompt_id: str, item_id: str) -> str:
    return "tr_" + hashlib.sha256(f"{key}|{prompt_id}|{item_id}".encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------
# 1. traces
# ---------------------------------------------------------------------------------------------
def collect_traces(gen: Generation) -> pd.DataFrame:
    """Run the production prompt on a sample of the train split; store validated traces."""
    prod = ensure_production(gen.registry, gen.agent)
    sample = _stratified(split_items(gen.items, "train"), gen.config.trace_items, gen.rng("traces"))
    tracker = gen.tracker("traces")
    before, made = dict(tracker.spent), gen.llm.calls_made
    results = gen.runner(tracker).run(prod.genome, sample, purpose="traces")
    gen.record_spend("traces", tracker, before, gen.llm.calls_made - made)
    rows = [
        {
            "id": _trace_id(gen.key, prod.id, r.item_id),
            "agent_type": gen.agent_type,
            "prompt_id": prod.id,
            "prompt_version": prod.version,
            "partition_key": gen.key,
            "source": "runner",
            "item_id": r.item_id,
            "input": r.input,
            "output": r.output,
            "expected": r.expected,
            "success": r.success,
            "checker_message": r.checker_message,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "cost_usd": r.cost_usd,
            "latency_ms": r.latency_ms,
            "tool_calls": [],
            "error": None,
            "metadata": {"task": r.task, "signature": r.signature, "split": r.split},
        }
        for r in results
    ]
    valid, bad = validate_traces(pd.DataFrame(rows))
    store_traces(gen.db, valid, gen.key)
    if bad:
        quarantine(gen.db, bad, "runner", gen.key)
    return valid.reset_index(drop=True)


def _trace_dicts(traces: pd.DataFrame) -> list[dict]:
    out = []
    for row in traces.to_dict("records"):
        meta = row.get("metadata") or {}
        out.append(
            {
                "trace_id": row["id"],
                "item_id": row.get("item_id"),
                "task": meta.get("task", "unknown"),
                "split": meta.get("split", "train"),
                "signature": meta.get("signature", "ok" if row["success"] else "failed"),
                "input": row["input"],
                "output": row["output"],
                "expected": row.get("expected"),
                "success": bool(row["success"]),
                "checker_message": row.get("checker_message", ""),
                "prompt_tokens": int(row["prompt_tokens"]),
                "completion_tokens": int(row["completion_tokens"]),
                "latency_ms": float(row["latency_ms"]),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# 2. failure clusters
# ---------------------------------------------------------------------------------------------
def find_failure_clusters(traces: pd.DataFrame) -> list[dict]:
    rows = _trace_dicts(traces)
    failed = [r for r in rows if not r["success"]]
    return [c.to_dict() for c in cluster_failures(failed, len(rows))]


# ---------------------------------------------------------------------------------------------
# 3. mutated population
# ---------------------------------------------------------------------------------------------
def parent_prompts(gen: Generation) -> list[PromptRecord]:
    """Production first, then the previous generation's best front members and per-instance survivors
    (those that solved something, at most ``max_parents``)."""
    prod = ensure_production(gen.registry, gen.agent)
    prev = f"{gen.agent_type}/g{gen.generation - 1:04d}"
    # members that solved nothing (on the front only for being short) would spend budget for nothing
    rows = gen.db.fetchall(
        "SELECT prompt_id FROM genepool.front_members WHERE experiment_id = %s"
        " AND (success_rate > 0 OR screen_success > 0)"
        " ORDER BY on_front DESC, success_rate DESC, avg_tokens ASC, prompt_id LIMIT %s",
        (prev, gen.config.max_parents),
    )
    parents = [prod]
    for r in rows:
        if r["prompt_id"] not in {p.id for p in parents}:
            parents.append(gen.registry.get(r["prompt_id"]))
    return parents


def mutate_population(gen: Generation, traces: pd.DataFrame, clusters: list[dict]) -> dict:
    """Breed children with DEAP operators; each must render (StrictUndefined) and pass the sanity check."""
    from genepool.core.clustering import FailureCluster

    parents = parent_prompts(gen)
    rows = _trace_dicts(traces)
    heldout = split_items(gen.items, "test")
    ctx = BreedContext(
        pool=gen.agent.instruction_pool,
        clusters=[FailureCluster(**{**c, "example_trace_ids": tuple(c["example_trace_ids"]),
                                    "example_messages": tuple(c["example_messages"]),
                                    "tasks": tuple(c["tasks"])}) for c in clusters],
        successes=[r for r in rows if r["success"]],
        labelled=split_items(gen.items, "train"),
        llm=gen.reflection_llm,
        n_reflect=gen.config.n_reflect if gen.reflection_llm is not None else 0,
        max_examples=gen.config.max_examples,
        examples_per_mine=gen.config.examples_per_mine,
        forbidden_inputs=frozenset(i.input for i in heldout),
        partition_key=gen.key,
    )
    children = breed([p.genome for p in parents], gen.config.population_size, gen.rng("population"), ctx)
    heldout_text = {i.input for i in heldout}
    out_children = []
    for pos, child in enumerate(children):
        parent_ids = [parents[i].id for i in child.parent_indices]
        verdict = sanity_check(child.genome, heldout_answers=heldout_text)
        prompt_id = None
        if verdict.ok:
            rec = gen.registry.register(
                gen.agent_type,
                child.genome,
                parent_ids=parent_ids,
                experiment_id=gen.key,
                generation=gen.generation,
                operator=child.operator,
                actor=OPTIMISER_ACTOR,
            )
            prompt_id = rec.id
        gen.db.execute(
            "INSERT INTO genepool.candidates (experiment_id, prompt_id, position, operator, parent_ids, genome,"
            " status, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (experiment_id, position) DO NOTHING",
            (
                gen.key,
                prompt_id,
                pos,
                child.operator,
                parent_ids,
                json.dumps(child.genome.to_dict()),
                "accepted" if verdict.ok else "rejected",
                "; ".join(verdict.reasons),
            ),
        )
        out_children.append(
            {
                "position": pos,
                "prompt_id": prompt_id,
                "operator": child.operator,
                "parent_ids": parent_ids,
                "status": "accepted" if verdict.ok else "rejected",
                "reason": "; ".join(verdict.reasons),
                "genome": child.genome.to_dict(),
            }
        )
    return {
        "partition_key": gen.key,
        "parents": [{"prompt_id": p.id, "version": p.version, "state": p.state} for p in parents],
        "children": out_children,
        "notes": list(ctx.notes),
    }


# ---------------------------------------------------------------------------------------------
# 4. experiment results
# ---------------------------------------------------------------------------------------------
def regression_set(gen: Generation, traces: pd.DataFrame) -> tuple[list[Item], list[Item]]:
    """Targets (train items production failed) and controls (items it passed), spread over tasks."""
    rows = _trace_dicts(traces)
    failed = [gen.by_id[r["item_id"]] for r in rows if not r["success"] and r["item_id"] in gen.by_id]
    passed = [gen.by_id[r["item_id"]] for r in rows if r["success"] and r["item_id"] in gen.by_id]
    targets = _stratified(failed, gen.config.n_targets, gen.rng("targets"))[: gen.config.n_targets]
    controls = _stratified(passed, gen.config.n_controls, gen.rng("controls"))[: gen.config.n_controls]
    return targets, controls


RESULT_COLUMNS = [
    "experiment_id", "prompt_id", "item_id", "split", "role", "task", "success", "score", "output",
    "checker_message", "signature", "prompt_tokens", "completion_tokens", "latency_ms", "cost_usd", "cached",
]


def _result_row(gen: Generation, prompt_id: str, role: str, r: ItemResult) -> dict:
    return {
        "experiment_id": gen.key,
        "prompt_id": prompt_id,
        "item_id": r.item_id,
        "split": r.split,
        "role": role,
        "task": r.task,
        "success": r.success,
        "score": r.score,
        "output": r.output,
        "checker_message": r.checker_message,
        "signature": r.signature,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "latency_ms": r.latency_ms,
        "cost_usd": r.cost_usd,
        "cached": r.cached,
    }


def _store_results(gen: Generation, rows: list[dict]) -> None:
    if not rows:
        return
    gen.db.executemany(
        "INSERT INTO genepool.experiment_results (experiment_id, prompt_id, item_id, split, role, success, score,"
        " output, checker_message, prompt_tokens, completion_tokens, latency_ms, cost_usd, cached)"
        " VALUES (%(experiment_id)s,%(prompt_id)s,%(item_id)s,%(split)s,%(role)s,%(success)s,%(score)s,%(output)s,"
        "%(checker_message)s,%(prompt_tokens)s,%(completion_tokens)s,%(latency_ms)s,%(cost_usd)s,%(cached)s)"
        " ON CONFLICT (experiment_id, prompt_id, item_id, role) DO NOTHING",
        rows,
    )


_MOVES_FROM = {"experimental": ("draft",), "candidate": ("draft", "experimental")}


def _label_once(gen: Generation, prompt_id: str, label: str, reason: str, details: dict | None = None) -> None:
    """Move a prompt forward in its lifecycle, never back: a re-run must not demote a prompt a person
    has since approved, rejected or archived."""
    if gen.registry.get(prompt_id).state in _MOVES_FROM[label]:
        gen.registry.label(prompt_id, label, OPTIMISER_ACTOR, reason, details)


def run_experiments(gen: Generation, population: dict, traces: pd.DataFrame) -> pd.DataFrame:
    """Run every accepted child (and carried-over parents) on targets + controls, within the budget."""
    targets, controls = regression_set(gen, traces)
    regression = [(it, "target") for it in targets] + [(it, "control") for it in controls]
    prod_id = population["parents"][0]["prompt_id"]
    rows: list[dict] = []
    # production's own results come from its traces (same prompt, same items: no new rollouts)
    by_item = {r["item_id"]: r for r in _trace_dicts(traces)}
    prod = gen.registry.get(prod_id)
    for it, role in regression:
        t = by_item[it.id]
        rows.append(
            _result_row(
                gen,
                prod_id,
                role,
                ItemResult(it.id, it.split, it.task, it.input, it.expected, t["output"], t["success"],
                           1.0 if t["success"] else 0.0, t["signature"], t["checker_message"], t["prompt_tokens"],
                           t["completion_tokens"], t["latency_ms"], 0.0, True),
            )
        )
    contenders = [p["prompt_id"] for p in population["parents"][1:]]
    contenders += [c["prompt_id"] for c in population["children"] if c["status"] == "accepted"]
    tracker = gen.tracker("experiments")
    before, made = dict(tracker.spent), gen.llm.calls_made
    runner = gen.runner(tracker)
    skipped = []
    for pid in contenders:
        if tracker.remaining_rollouts is not None and tracker.remaining_rollouts < len(regression):
            skipped.append(pid)  # whole candidates only: never a half-evaluated one
            continue
        rec = gen.registry.get(pid)
        _label_once(gen, pid, "experimental", f"evaluated in {gen.key}")
        try:
            for it, role in regression:
                rows.append(_result_row(gen, pid, role, runner.run_item(rec.genome, it, purpose="experiment")))
        except BudgetExceeded:
            rows = [r for r in rows if r["prompt_id"] != pid]
            skipped.append(pid)
    gen.record_spend("experiments", tracker, before, gen.llm.calls_made - made)
    _store_results(gen, rows)
    if skipped:
        log.warning("%s: budget left no room to evaluate %d candidates: %s", gen.key, len(skipped), skipped)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df.attrs["skipped_for_budget"] = skipped
    df.attrs["production_id"] = prod.id
    return df


# ---------------------------------------------------------------------------------------------
# 5. Pareto front
# ---------------------------------------------------------------------------------------------
def _evals(gen: Generation, df: pd.DataFrame, roles: tuple[str, ...]) -> dict[str, CandidateEval]:
    evals: dict[str, CandidateEval] = {}
    for r in df.to_dict("records"):
        if r["role"] not in roles:
            continue
        ev = evals.get(r["prompt_id"])
        if ev is None:
            ev = evals[r["prompt_id"]] = CandidateEval(r["prompt_id"], gen.registry.get(r["prompt_id"]).genome)
        ev.results[r["item_id"]] = ItemOutcome(
            success=bool(r["success"]),
            tokens=int(r["prompt_tokens"]) + int(r["completion_tokens"]),
            latency_ms=float(r["latency_ms"]),
            role=r["role"] if r["role"] in ("target", "control") else "validation",
        )
    return evals


def _summary(ev: CandidateEval, roles: tuple[str, ...]) -> dict:
    s, t, lat = raw_objectives(ev, roles)
    return {"success": round(s, 6), "avg_tokens": round(t, 3), "avg_latency_ms": round(lat, 3)}


def select_front(gen: Generation, results: pd.DataFrame) -> dict:
    """NSGA-II on [success, -tokens, -latency] over the regression set, control regressions infeasible;
    the front is then re-scored on validation, where GEPA-style per-instance survivors are also kept."""
    screen_roles = ("target", "control")
    prod_id = results.attrs.get("production_id") or ensure_production(gen.registry, gen.agent).id
    evals = _evals(gen, results, screen_roles)
    baseline = evals[prod_id]
    ranked = rank_all(list(evals.values()), baseline, gen.config.max_control_regressions, screen_roles)
    front = pareto_front(list(evals.values()), baseline, gen.config.max_control_regressions, screen_roles)
    to_validate = [prod_id] + [ev.prompt_id for ev in front if ev.prompt_id != prod_id][: gen.config.validate_top]

    val_items = _stratified(split_items(gen.items, "validation"), gen.config.validation_items, gen.rng("validation"))
    tracker = gen.tracker("validation")
    before, made = dict(tracker.spent), gen.llm.calls_made
    runner = gen.runner(tracker)
    rows: list[dict] = []
    validated: list[str] = []
    for pid in to_validate:
        if tracker.remaining_rollouts is not None and tracker.remaining_rollouts < len(val_items):
            break
        rec = gen.registry.get(pid)
        rows += [_result_row(gen, pid, "validation", runner.run_item(rec.genome, it, "validation")) for it in val_items]
        validated.append(pid)
    gen.record_spend("validation", tracker, before, gen.llm.calls_made - made)
    _store_results(gen, rows)
    val_evals = _evals(gen, pd.DataFrame(rows, columns=RESULT_COLUMNS), ("validation",))
    survivors = per_instance_survivors(list(val_evals.values()), ("validation",)) if val_evals else set()

    front_ids = {ev.prompt_id for ev in front}
    members = []
    for r in ranked:
        pid = r.eval.prompt_id
        if pid not in front_ids and pid not in survivors:
            continue
        entry = {
            "prompt_id": pid,
            "version": gen.registry.get(pid).version,
            "rank": r.rank,
            "on_front": pid in front_ids,
            "survivor": pid in survivors,
            "feasible": r.feasible,
            "control_regressions": r.control_regressions,
            "screen": _summary(r.eval, screen_roles),
            "validation": _summary(val_evals[pid], ("validation",)) if pid in val_evals else None,
        }
        members.append(entry)
    for m in members:
        v = m["validation"] or {"success": m["screen"]["success"], "avg_tokens": m["screen"]["avg_tokens"],
                                "avg_latency_ms": m["screen"]["avg_latency_ms"]}
        gen.db.execute(
            "INSERT INTO genepool.front_members (experiment_id, prompt_id, rank, success_rate, avg_tokens,"
            " avg_latency_ms, control_regressions, feasible, on_front, survivor, screen_success)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (experiment_id, prompt_id) DO NOTHING",
            (gen.key, m["prompt_id"], m["rank"], v["success"], v["avg_tokens"], v["avg_latency_ms"],
             m["control_regressions"], m["feasible"], m["on_front"], m["survivor"], m["screen"]["success"]),
        )
    points = [(m["screen"]["success"], -m["screen"]["avg_tokens"], -m["screen"]["avg_latency_ms"])
              for m in members if m["on_front"]]
    return {
        "partition_key": gen.key,
        "production_id": prod_id,
        "baseline": {"screen": _summary(baseline, screen_roles),
                     "validation": _summary(val_evals[prod_id], ("validation",)) if prod_id in val_evals else None},
        "members": members,
        "ranked": [{"prompt_id": r.eval.prompt_id, "rank": r.rank, "feasible": r.feasible,
                    "control_regressions": r.control_regressions, "objectives": [round(x, 6) for x in r.objectives]}
                   for r in ranked],
        "hypervolume": round(_hypervolume(points), 6),
        "validation_items": len(val_items),
    }


def _hypervolume(points: list[tuple[float, float, float]]) -> float:
    """Normalised hypervolume of the front: fraction of the box from (0 success, worst tokens,
    worst latency) to (1, 0, 0) that the front dominates (the box scales with this front)."""
    if not points:
        return 0.0
    worst_t = max(-p[1] for p in points) * 1.1 + 1.0
    worst_l = max(-p[2] for p in points) * 1.1 + 1.0
    return float(hypervolume(points, ref=(0.0, -worst_t, -worst_l), ideal=(1.0, 0.0, 0.0)))


# ---------------------------------------------------------------------------------------------
# 6. promotion
# ---------------------------------------------------------------------------------------------
def promote(gen: Generation, front: dict) -> dict:
    """Front members that beat production on validation with no control regression become `candidate`.
    A person approves one to production (``genepool approve``). The held-out test split is used only
    for this report, never for selection."""
    base_val = (front["baseline"] or {}).get("validation")
    promoted = []
    if base_val is not None:
        for m in front["members"]:
            v = m["validation"]
            if (
                m["on_front"]
                and m["prompt_id"] != front["production_id"]
                and v is not None
                and m["control_regressions"] == 0
                and v["success"] > base_val["success"] + gen.config.min_improvement
            ):
                promoted.append(m)
    promoted.sort(key=lambda m: (-m["validation"]["success"], m["validation"]["avg_tokens"], m["prompt_id"]))
    for m in promoted:
        _label_once(
            gen,
            m["prompt_id"],
            "candidate",
            f"beats production on validation in {gen.key}: {m['validation']['success']:.3f} vs "
            f"{base_val['success']:.3f}, no control regression",
            {"experiment_id": gen.key, "validation": m["validation"], "production": base_val},
        )
    test = {}
    if gen.config.report_test:
        test_items = _stratified(split_items(gen.items, "test"), gen.config.test_items, gen.rng("test"))
        runner = gen.runner(None)  # the report is outside the optimisation budget
        made = gen.llm.calls_made
        rows = []
        for pid in [front["production_id"]] + [m["prompt_id"] for m in promoted[:1]]:
            rec = gen.registry.get(pid)
            res = [runner.run_item(rec.genome, it, "test") for it in test_items]
            rows += [_result_row(gen, pid, "test", r) for r in res]
            n = len(res) or 1
            test[pid] = {
                "success": round(sum(r.success for r in res) / n, 6),
                "avg_tokens": round(sum(r.tokens for r in res) / n, 3),
                "avg_latency_ms": round(sum(r.latency_ms for r in res) / n, 3),
                "items": len(res),
            }
        _store_results(gen, rows)
        gen.db.execute(
            "INSERT INTO genepool.generation_spend (experiment_id, step, rollouts, llm_calls) VALUES (%s,'test_report',%s,%s)"
            " ON CONFLICT (experiment_id, step) DO UPDATE SET rollouts = EXCLUDED.rollouts, llm_calls = EXCLUDED.llm_calls",
            (gen.key, 0, gen.llm.calls_made - made),
        )
    return {
        "partition_key": gen.key,
        "production_id": front["production_id"],
        "production_validation": base_val,
        "promoted": [
            {"prompt_id": m["prompt_id"], "version": m["version"], "validation": m["validation"],
             "screen": m["screen"]}
            for m in promoted
        ],
        "test": test,
    }


def generation_spend(db: Database, key: str) -> dict:
    rows = db.fetchall("SELECT * FROM genepool.generation_spend WHERE experiment_id = %s ORDER BY step", (key,))
    return {r["step"]: {"rollouts": r["rollouts"], "tokens": int(r["tokens"]), "usd": r["usd"],
                        "llm_calls": r["llm_calls"]} for r in rows}


# ---------------------------------------------------------------------------------------------
# whole generations without Dagster
# ---------------------------------------------------------------------------------------------
def run_generation(gen: Generation) -> dict:
    """All six steps of one generation, in order (what the Dagster job does, minus Dagster)."""
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - t0
        return out

    traces = timed("traces", collect_traces, gen)
    clusters = timed("failure_clusters", find_failure_clusters, traces)
    population = timed("mutated_population", mutate_population, gen, traces, clusters)
    results = timed("experiment_results", run_experiments, gen, population, traces)
    front = timed("pareto_front", select_front, gen, results)
    promoted = timed("promoted_prompts", promote, gen, front)
    return {"traces": traces, "clusters": clusters, "population": population, "results": results,
            "front": front, "promoted": promoted, "timings": timings}


@dataclass
class OptimizeResult:
    best_genome: Genome
    best_prompt_id: str
    front: list[dict]
    rollouts_used: int
    history: list[dict]


def optimize(
    agent_type: str,
    llm: LLMClient,
    *,
    items: list[Item] | None = None,
    rollouts: int = 300,
    seed: int = 1234,
    reflection_llm: LLMClient | None = None,
    db: Database | None = None,
    config: GenerationConfig | None = None,
    max_generations: int = 50,
    patience: int = 3,
) -> OptimizeResult:
    """Run generations until ``rollouts`` task-model calls are spent (train + validation only).

    Each generation auto-approves its best candidate as the next production prompt (the benchmark
    has no human in the loop); the held-out test split is never touched here.
    """
    db = db or llm.db or Database.from_env()
    base = replace(config or GenerationConfig(), seed=seed, report_test=False)
    registry = PromptRegistry(db)
    spent = 0
    history: list[dict] = []
    best_val: list[float] = []
    gen_no = 1 + max((r["generation"] for r in db.fetchall(
        "SELECT generation FROM genepool.experiments WHERE agent_type = %s", (agent_type,))), default=0)
    last_front: list[dict] = []
    for _ in range(max_generations):
        remaining = rollouts - spent
        if remaining < base.trace_items + base.n_targets + base.n_controls:
            break
        cfg = replace(base, max_rollouts=remaining)
        gen = Generation(db, llm, agent_type, gen_no, cfg, reflection_llm, items)
        out = run_generation(gen)
        used = sum(v["rollouts"] for k, v in generation_spend(db, gen.key).items() if k != "test_report")
        spent += used
        promoted = out["promoted"]["promoted"]
        if promoted:
            registry.approve(promoted[0]["prompt_id"], "benchmark-auto-approve", "best candidate of " + gen.key)
        prod_val = (out["front"]["baseline"] or {}).get("validation")
        gen_no += 1
        if prod_val is None:  # the budget ran out before validation: nothing was learnt, keep the last front
            history.append({"generation": gen_no - 1, "rollouts": used, "best_validation": None, "promoted": []})
            break
        best = max([prod_val["success"]] + [p["validation"]["success"] for p in promoted])
        best_val.append(best)
        last_front = out["front"]["members"]
        history.append({"generation": gen_no - 1, "rollouts": used, "best_validation": best,
                        "promoted": [p["prompt_id"] for p in promoted]})
        if used == 0 or (len(best_val) > patience and max(best_val[-patience:]) <= max(best_val[:-patience])):
            break
    prod = registry.get_prompt(agent_type, "prod")
    front = [{"prompt_id": m["prompt_id"], "genome": registry.get(m["prompt_id"]).genome,
              "success": (m["validation"] or m["screen"])["success"],
              "avg_tokens": (m["validation"] or m["screen"])["avg_tokens"]} for m in last_front]
    return OptimizeResult(prod.genome, prod.id, front, spent, history)
