"""The context every step works in: the partition, its settings, its models, its budget and its lock.

Creating a ``Generation`` reads the agent and its benchmark and writes nothing. ``register`` (called by
the first step, ``collect_traces``) records the experiment with its fingerprint; every later step
checks that fingerprint, so a re-run after a change of settings, model or benchmark is refused before
anything is spent or written. ``step(name)`` holds the partition's advisory lock and yields a
``Meter`` (genepool/steps/meter.py): the step's budget in front of its LLM clients.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from genepool import store
from genepool.agents import AgentSpec, get_agent, load_agent_benchmark
from genepool.core.benchmark import Item
from genepool.core.budget import BudgetTracker
from genepool.core.evolution import generation_rng
from genepool.core.sanity import check_seed
from genepool.db import Database
from genepool.keys import partition_key
from genepool.llm import LLMClient
from genepool.registry import PromptRecord, PromptRegistry
from genepool.settings import GenerationConfig
from genepool.steps.meter import Meter

SEED_ACTOR = "genepool-seed"
OPTIMISER_ACTOR = "genepool"


class FingerprintMismatch(RuntimeError):
    """The partition was started with other settings, model or benchmark: its rows would be stale."""


def model_identity(llm: LLMClient) -> dict[str, Any]:
    p = llm.provider
    return {"provider": p.name, "model": p.model, "base_url": getattr(p, "base_url", None)}


def benchmark_hash(items: list[Item]) -> str:
    blob = json.dumps([i.to_dict() for i in sorted(items, key=lambda i: i.id)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def ensure_production(registry: PromptRegistry, agent: AgentSpec) -> PromptRecord:
    """The agent's production prompt; the seed goes to production only for an agent with no prompt at all
    (prompts but no production prompt is a RegistryError naming the fix: approve one). The seed must pass the
    same sanity check as every child (``check_seed`` raises SeedRejected naming the field)."""
    check_seed(agent.agent_type, agent.seed_genome)
    return registry.seed_production(agent.agent_type, agent.seed_genome, SEED_ACTOR, "seed prompt of the agent type")


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
        self.key = partition_key(self.agent_type, self.generation)
        self.agent: AgentSpec = get_agent(self.agent_type)
        if self.items is None:
            self.items = load_agent_benchmark(self.agent_type)
        self.registry = PromptRegistry(self.db)
        self.by_id = {i.id: i for i in self.items}
        self._lock_depth = 0
        self._lock_stack = contextlib.ExitStack()

    @property
    def experiment_id(self) -> str:
        return self.key

    def rng(self, step: str):
        return generation_rng(self.config.seed, f"{self.agent_type}:{step}", self.generation)

    def production(self) -> PromptRecord:
        return ensure_production(self.registry, self.agent)

    # --- fingerprint ------------------------------------------------------------------------------
    def fingerprint_parts(self) -> dict[str, Any]:
        assert self.items is not None
        return {"config": self.config.to_dict(), "model": model_identity(self.llm),
                "benchmark_sha256": benchmark_hash(self.items), "seed": self.config.seed}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint_parts(), sort_keys=True).encode()).hexdigest()

    def register(self) -> None:
        """Record the agent and this generation's experiment (the first step calls this); refuse if the
        partition was started with another fingerprint."""
        store.ensure_agent(self.db, self.agent)
        row = store.insert_experiment(self.db, self.key, self.agent_type, self.generation, self.config.seed,
                                      self.config.to_dict(), self.fingerprint(), self.fingerprint_parts())
        self._compare(row)

    def verify(self) -> None:
        row = store.experiment(self.db, self.key)
        if row is None:
            raise RuntimeError(f"generation {self.key} is not registered: run its first step (traces) first")
        self._compare(row)

    def _compare(self, row: dict) -> None:
        if row.get("fingerprint") in (None, self.fingerprint()):
            return
        then, now = row.get("fingerprint_parts") or {}, self.fingerprint_parts()
        changed = [f"{k}: {then.get(k)!r} -> {now[k]!r}" for k in sorted(now)
                   if k != "config" and then.get(k) != now[k]]
        old_cfg = then.get("config") or {}
        changed += [f"config.{k}: {old_cfg.get(k)!r} -> {v!r}" for k, v in sorted(now["config"].items())
                    if old_cfg.get(k) != v]
        raise FingerprintMismatch(
            f"generation {self.key} was started with other settings ({'; '.join(changed) or 'unknown change'}); "
            f"its stored rows would be stale. Run a new generation instead (e.g. generation {self.generation + 1}: "
            f"genepool run --agent {self.agent_type} --generation {self.generation + 1}), or restore the settings "
            "to resume this one."
        )

    # --- lock and budget --------------------------------------------------------------------------
    def hold_lock(self, step: str) -> contextlib.AbstractContextManager:
        """The partition's advisory lock, re-entrant within this Generation (run_generation holds it
        across all six steps; each step takes it too when run alone, as the Dagster assets do)."""

        @contextlib.contextmanager
        def held() -> Iterator[None]:
            if self._lock_depth == 0:
                self._lock_stack.enter_context(store.partition_lock(self.db.url, self.key, step))
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._lock_stack.close()

        return held()

    @contextlib.contextmanager
    def step(self, name: str, *, register: bool = False) -> Iterator[Meter]:
        with self.hold_lock(name):
            if register:
                self.register()
            else:
                self.verify()
            store.start_step_spend(self.db, self.key, name)
            yield Meter(self, name, self.llm, self.tracker(name))

    def tracker(self, step: str) -> BudgetTracker:
        """The step's budget: rollouts of the other steps (the report counts only against its own cap),
        tokens of the other steps, and every dollar this generation has spent so far."""
        spend = store.generation_spend(self.db, self.key)
        others = {k: v for k, v in spend.steps.items() if k != step}
        if step == store.REPORT_STEP:
            rollouts = 0
            budget = self.config.budget(max_rollouts=self.config.max_report_rollouts)
        else:
            rollouts = sum(v.rollouts for k, v in others.items() if k != store.REPORT_STEP)
            budget = self.config.budget()
        spent = {"rollouts": rollouts, "tokens": sum(v.tokens for v in others.values()), "usd": spend.usd}
        return BudgetTracker(budget, spent=spent)
