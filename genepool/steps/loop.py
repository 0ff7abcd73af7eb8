"""Whole generations without Dagster: ``run_generation`` chains the six steps (what the Dagster job does),
``optimize`` runs generations until a rollout budget is spent (the side-by-side benchmark uses it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from genepool import store
from genepool.core.benchmark import Item, split_items
from genepool.core.genome import Genome
from genepool.db import Database
from genepool.llm import LLMClient
from genepool.registry import PromptRegistry
from genepool.settings import GenerationConfig
from genepool.steps.clusters import FailureClusters, find_failure_clusters
from genepool.steps.context import Generation
from genepool.steps.experiments import ExperimentResults, run_experiments
from genepool.steps.front import Front, select_front
from genepool.steps.population import Population, mutate_population
from genepool.steps.promotion import Promotion, promote
from genepool.steps.traces import TraceSet, collect_traces


@dataclass(frozen=True)
class GenerationRun:
    traces: TraceSet
    clusters: FailureClusters
    population: Population
    results: ExperimentResults
    front: Front
    promotion: Promotion
    timings: dict[str, float]


def run_generation(gen: Generation) -> GenerationRun:
    """All six steps of one generation, in order, holding the partition's lock throughout."""
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - t0
        return out

    with gen.hold_lock("generation"):
        traces = timed("traces", collect_traces, gen)
        clusters = timed("failure_clusters", find_failure_clusters, traces)
        population = timed("mutated_population", mutate_population, gen, traces, clusters)
        results = timed("experiment_results", run_experiments, gen, population, traces)
        front = timed("pareto_front", select_front, gen, results)
        promotion = timed("promoted_prompts", promote, gen, front)
    return GenerationRun(traces, clusters, population, results, front, promotion, timings)


@dataclass(frozen=True)
class FrontEntry:
    prompt_id: str
    genome: Genome
    success: float
    avg_tokens: float


@dataclass(frozen=True)
class GenerationSummary:
    generation: int
    rollouts: int
    best_validation: float | None  # None: the budget ran out before validation
    promoted: tuple[str, ...]
    children: int = 0  # population size this generation was given (shrunk to fit the budget left)
    not_significant: tuple[str, ...] = ()  # better mean than production, but not significantly


@dataclass(frozen=True)
class OptimizeResult:
    best_genome: Genome
    best_prompt_id: str
    front: tuple[FrontEntry, ...]
    rollouts_used: int
    history: tuple[GenerationSummary, ...]


def generation_cost(cfg: GenerationConfig, n_parents: int, n_validation: int, n_train: int | None = None) -> int:
    """Upper bound of the rollouts one generation spends: traces, every contender on the regression set,
    production and ``validate_top`` front members on the validation items (splits smaller than the
    configured sizes are used whole)."""
    val = n_validation if cfg.validation_items == 0 else min(cfg.validation_items, n_validation)
    traces = cfg.trace_items if n_train is None or 0 < cfg.trace_items < n_train else n_train
    regression = min(cfg.n_targets + cfg.n_controls, traces)
    return traces + regression * (cfg.population_size + n_parents) + val * (1 + cfg.validate_top)


def fit_generation(cfg: GenerationConfig, remaining: int, n_parents: int, n_validation: int,
                   n_train: int | None = None) -> GenerationConfig | None:
    """``cfg`` shrunk until a whole generation fits ``remaining`` rollouts (validation included), or None.

    Fewer children first (down to 2), then fewer validated front members (down to 1), then fewer carried-over
    parents: a generation that cannot validate at least one child against production is not started.
    """
    cfg = replace(cfg, max_rollouts=remaining)
    while generation_cost(cfg, n_parents, n_validation, n_train) > remaining:
        if cfg.population_size > 2:
            cfg = replace(cfg, population_size=cfg.population_size - 1)
        elif cfg.validate_top > 1:
            cfg = replace(cfg, validate_top=cfg.validate_top - 1)
        elif n_parents > 0:
            n_parents -= 1
            cfg = replace(cfg, max_parents=n_parents)
        else:
            return None
    return cfg


def absorb_leftover(cfg: GenerationConfig, remaining: int, n_parents: int, n_validation: int,
                    n_train: int | None = None, max_validate_top: int = 6,
                    max_population: int = 24) -> GenerationConfig:
    """When what this generation leaves could not pay for another validated generation, spend it here:
    more front members validated (up to ``max_validate_top``), then more children (up to ``max_population``)."""
    smallest_next = generation_cost(replace(cfg, population_size=2, validate_top=1), 0, n_validation, n_train)
    if remaining - generation_cost(cfg, n_parents, n_validation, n_train) >= smallest_next:
        return cfg
    while True:
        grown = None
        if cfg.validate_top < max_validate_top:
            grown = replace(cfg, validate_top=cfg.validate_top + 1)
        if grown is None or generation_cost(grown, n_parents, n_validation, n_train) > remaining:
            grown = replace(cfg, population_size=cfg.population_size + 1) if cfg.population_size < max_population \
                else None
        if grown is None or generation_cost(grown, n_parents, n_validation, n_train) > remaining:
            return cfg
        cfg = grown


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
    patience: int = 2,
) -> OptimizeResult:
    """Run generations until ``rollouts`` model calls are spent (train + validation only), stopping early
    when ``patience`` generations in a row promoted nothing (no child beat production significantly,
    ``GenerationConfig.promotion_confidence``) or the best validation score stopped improving.

    Every generation is sized to fit the budget left, validation included (``fit_generation``), so none
    is started that could not validate a child; the last one gets fewer children instead of none.

    Each generation auto-approves its best candidate as the next production prompt (the benchmark
    has no human in the loop); the held-out test split is never touched here.
    """
    if patience < 1:
        raise ValueError(f"patience={patience} must be >= 1")
    db = db or llm.db or Database.from_env()
    base = replace(config or GenerationConfig(), seed=seed, report_test=False)
    registry = PromptRegistry(db)
    spent = 0
    history: list[GenerationSummary] = []
    best_val: list[float] = []
    gen_no = 1 + store.last_generation(db, agent_type)
    last_front: tuple = ()
    stale = 0  # generations in a row without a significant promotion
    if items is None:
        from genepool.agents import load_agent_benchmark

        items = load_agent_benchmark(agent_type)
    n_validation = len(split_items(items, "validation"))
    n_train = len(split_items(items, "train"))
    for _ in range(max_generations):
        remaining = rollouts - spent
        n_parents = min(base.max_parents, len(last_front))
        cfg = fit_generation(base, remaining, n_parents, n_validation, n_train)
        if cfg is None:
            break
        cfg = absorb_leftover(cfg, remaining, n_parents, n_validation, n_train)
        gen = Generation(db, llm, agent_type, gen_no, cfg, reflection_llm, items)
        out = run_generation(gen)
        used = store.generation_spend(db, gen.key).rollouts
        spent += used
        promoted = out.promotion.promoted
        if promoted:
            registry.approve(promoted[0].prompt_id, "benchmark-auto-approve", "best candidate of " + gen.key)
        prod_val = out.front.baseline_validation
        gen_no += 1
        if prod_val is None:  # the budget ran out before validation: nothing was learnt, keep the last front
            history.append(GenerationSummary(gen.generation, used, None, ()))
            break
        best = max([prod_val.success] + [p.validation.success for p in promoted if p.validation is not None])
        best_val.append(best)
        last_front = out.front.members
        history.append(GenerationSummary(gen.generation, used, best, tuple(p.prompt_id for p in promoted),
                                         cfg.population_size, out.promotion.not_significant))
        stale = 0 if promoted else stale + 1
        if used == 0 or stale >= patience:
            break
        if len(best_val) > patience and max(best_val[-patience:]) <= max(best_val[:-patience]):
            break
    prod = registry.get_prompt(agent_type, "prod")
    front = tuple(FrontEntry(m.prompt_id, registry.get(m.prompt_id).genome, m.best_known.success,
                             m.best_known.avg_tokens) for m in last_front)
    return OptimizeResult(prod.genome, prod.id, front, spent, tuple(history))
