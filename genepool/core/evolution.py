"""Breeding a generation: a DEAP toolbox of genome operators, deterministic given the RNG.

``breed(parents, n_children, rng, ctx)`` returns distinct children (no child equal to a parent or
to another child), each with the operator that made it and its parents' indices. Reflection (the
only model-based operator) runs first on the best parent, then crossover and rule-based mutations
fill the remaining slots. All randomness comes from ``rng`` (see ``generation_rng``), and the
reflection model is greedy and cached, so the same inputs give byte-identical children.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deap import base

from genepool.core import example_ops as xops
from genepool.core import operators as ops
from genepool.core.clustering import FailureCluster
from genepool.core.genome import Genome
from genepool.core.selection import ensure_creator

log = logging.getLogger(__name__)

ensure_creator()

# relative weights of the rule-based mutation operators
DEFAULT_MUTATION_WEIGHTS: dict[str, float] = {
    "add_instruction": 3.0,
    "remove_instruction": 1.0,
    "rephrase_instruction": 2.0,
    "mine_examples": 3.0,
    "drop_example": 1.0,
    "mutate_params": 2.0,
    # example-set search (genepool/core/example_ops.py) and decoding genes
    "add_example": 2.0,
    "swap_example": 3.0,
    "drop_example_redundant": 1.0,
    "reorder_example": 1.0,
    "tune_decoding": 1.0,
    # a whole new few-shot set: first for a parent that is not a few-shot prompt yet (see ``breed``), then,
    # rarely, as a restart for one that is
    "fewshot_init": 0.5,
    # a pool of labelled examples shown as the k nearest the input (dynamic few-shot), and moves of k
    "knn_init": 0.5,
    "tune_select": 1.0,
}


@dataclass(frozen=True)
class Child:
    genome: Genome
    operator: str
    parent_indices: tuple[int, ...]


@dataclass
class BreedContext:
    """What the operators may use besides the parents.

    pool: the agent's instruction pool; clusters: failure clusters of the parents' evaluation;
    successes: successful train traces (dicts with input/output/task); labelled: TRAIN demonstrations
    (benchmark items or dicts with input/expected/task/split); llm: reflection model with ``.chat``
    or None; n_reflect: reflective children to ask for; max_examples: cap of few-shot examples.
    """

    pool: Sequence[str] = ()
    clusters: Sequence[FailureCluster] = ()
    successes: Sequence[Any] = ()
    labelled: Sequence[Any] = ()
    llm: Any = None
    n_reflect: int = 0
    max_examples: int = ops.DEFAULT_MAX_EXAMPLES
    examples_per_mine: int = 2
    cx_prob: float = 0.3
    mut_prob: float = 0.7
    mutation_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MUTATION_WEIGHTS))
    forbidden_inputs: frozenset[str] = frozenset()
    partition_key: str | None = None
    max_tries_per_child: int = 25
    n_fewshot_init: int = 4  # whole example sets tried when the best parent is not a few-shot prompt (pool) yet
    max_pool: int = 96  # examples a nearest-example pool may hold (GenerationConfig.example_pool_size)
    notes: list[str] = field(default_factory=list)  # why reflection replies were dropped, shortfalls

    def __post_init__(self) -> None:
        for name in ("cx_prob", "mut_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"BreedContext.{name}={v} must be between 0 and 1")
        if self.cx_prob + self.mut_prob <= 0:
            raise ValueError("BreedContext: cx_prob and mut_prob are both 0; set at least one above 0")
        unknown = set(self.mutation_weights) - set(DEFAULT_MUTATION_WEIGHTS)
        if unknown:
            raise ValueError(
                f"BreedContext.mutation_weights has unknown operators {sorted(unknown)}; "
                f"use {sorted(DEFAULT_MUTATION_WEIGHTS)}"
            )
        if self.n_reflect < 0 or self.max_examples < 0 or self.max_pool < 0:
            raise ValueError("BreedContext.n_reflect, max_examples and max_pool must be >= 0")


def generation_rng(seed: int, agent_type: str, generation: int) -> random.Random:
    """A stable RNG per (seed, agent type, generation), independent of PYTHONHASHSEED."""
    digest = hashlib.sha256(f"genepool:{int(seed)}:{agent_type}:{int(generation)}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def make_toolbox(ctx: BreedContext, pool: xops.ExamplePool | None = None) -> base.Toolbox:
    """A DEAP toolbox with every operator registered, bound to the context."""
    tb = base.Toolbox()
    tb.register("mate", ops.crossover)
    tb.register("add_instruction", ops.add_instruction, pool=ctx.pool, clusters=ctx.clusters)
    tb.register("remove_instruction", ops.remove_instruction)
    tb.register("rephrase_instruction", ops.rephrase_instruction)
    tb.register(
        "mine_examples",
        ops.mine_examples,
        successes=ctx.successes,
        labelled=ctx.labelled,
        k=max(1, ctx.examples_per_mine),
        clusters=ctx.clusters,
        max_examples=ctx.max_examples,
        forbidden_inputs=ctx.forbidden_inputs,
    )
    tb.register("drop_example", ops.drop_example)
    tb.register("mutate_params", ops.mutate_params)
    pool = pool if pool is not None else xops.ExamplePool(ctx.labelled, ctx.successes, ctx.forbidden_inputs)
    tb.register("fewshot_init", xops.fewshot_init, pool=pool, max_examples=ctx.max_examples)
    tb.register("knn_init", xops.knn_init, pool=pool, max_pool=ctx.max_pool)
    tb.register("tune_select", xops.tune_select, max_examples=ctx.max_examples)

    def add_example(g: Genome, rng: random.Random) -> Genome:
        # a pool may grow to max_pool, a fixed set to max_examples
        cap = ctx.max_pool if g.example_select else ctx.max_examples
        return xops.add_example(g, rng, pool=pool, clusters=ctx.clusters, max_examples=cap)

    tb.register("add_example", add_example)
    tb.register("swap_example", xops.swap_example, pool=pool)
    tb.register("drop_example_redundant", xops.drop_example_redundant, pool=pool)
    tb.register("reorder_example", xops.reorder_example)
    tb.register("tune_decoding", xops.tune_decoding)
    tb.register(
        "reflect", ops.reflect, clusters=ctx.clusters, llm=ctx.llm, partition_key=ctx.partition_key, notes=ctx.notes
    )
    return tb


def breed(parents: Sequence[Genome], n_children: int, rng: random.Random, ctx: BreedContext) -> list[Child]:
    """Make up to ``n_children`` distinct children of ``parents`` (best parent first).

    Order of work: reflection on ``parents[0]`` (if ``ctx.llm`` and ``ctx.n_reflect``), then up to
    ``n_fewshot_init`` whole example sets: nearest-example pools showing 4 and 2 examples
    (``example_ops.knn_init``) when ``parents[0]`` is not a pool yet, interleaved with fixed few-shot sets of
    2 and 1 per task (``example_ops.fewshot_init``) when it shows fewer examples than the pool has tasks;
    then, per slot,
    crossover of two random parents with probability ``cx_prob / (cx_prob + mut_prob)`` (needs two
    parents), otherwise a rule-based mutation of a random parent chosen by ``mutation_weights``.
    A child equal to a parent or an earlier child is drawn again, at most ``max_tries_per_child``
    times per slot; a shortfall is noted in ``ctx.notes``.
    """
    if not parents:
        raise ValueError("breed needs at least one parent genome")
    if n_children < 0:
        raise ValueError(f"n_children={n_children} must be >= 0")
    pool = xops.ExamplePool(ctx.labelled, ctx.successes, ctx.forbidden_inputs)
    tb = make_toolbox(ctx, pool)
    seen = {p.fingerprint() for p in parents}
    children: list[Child] = []

    def accept(g: Genome, op: str, idx: tuple[int, ...]) -> bool:
        fp = g.fingerprint()
        if fp in seen or len(children) >= n_children:
            return False
        seen.add(fp)
        children.append(Child(g, op, idx))
        return True

    if ctx.llm is not None and ctx.n_reflect > 0 and n_children > 0:
        for g in tb.reflect(parents[0], rng, n=min(ctx.n_reflect, n_children)):
            accept(g, "reflect", (0,))

    # whole example sets first, each a different label-balanced draw: for a parent that is not yet a few-shot
    # prompt (fewer examples than tasks), fixed sets of k = 2 and 1 per task (what a practitioner starts from);
    # for one that is not yet a nearest-example pool, pools showing the 4 and 2 nearest examples; interleaved
    n_tasks = len(pool.tasks())
    inits: list[tuple[str, Any]] = []
    if n_tasks and not parents[0].example_select and ctx.mutation_weights.get("knn_init", 0) > 0:
        inits += [("knn_init", {"k": 4}), ("knn_init", {"k": 2})]
    if n_tasks and len(parents[0].examples) < n_tasks and ctx.mutation_weights.get("fewshot_init", 0) > 0:
        fixed = [("fewshot_init", {"per_task": 2}), ("fewshot_init", {"per_task": 1})]
        inits = [x for pair in zip(inits, fixed, strict=True) for x in pair] if inits else fixed
    if inits:
        want = len(children) + min(ctx.n_fewshot_init, n_children - len(children))
        for attempt in range(want * ctx.max_tries_per_child):
            if len(children) >= want:
                break
            op, kwargs = inits[attempt % len(inits)]
            accept(getattr(tb, op)(parents[0], rng, **kwargs), op, (0,))

    ops_names = [name for name, w in sorted(ctx.mutation_weights.items()) if w > 0]
    weights = [ctx.mutation_weights[n] for n in ops_names]
    p_cx = ctx.cx_prob / (ctx.cx_prob + ctx.mut_prob)
    budget = max(0, n_children - len(children)) * ctx.max_tries_per_child
    tries = 0
    while len(children) < n_children and tries < budget:
        tries += 1
        if len(parents) >= 2 and rng.random() < p_cx:
            i, j = rng.sample(range(len(parents)), 2)
            a, b = tb.mate(parents[i], parents[j], rng)
            accept(a, "crossover", (i, j))
            accept(b, "crossover", (i, j))
            continue
        if not ops_names:
            continue
        i = rng.randrange(len(parents))
        op = rng.choices(ops_names, weights=weights)[0]
        accept(getattr(tb, op)(parents[i], rng), op, (i,))
    if len(children) < n_children:
        msg = f"breed: made {len(children)} of {n_children} distinct children after {tries} tries"
        log.info(msg)
        ctx.notes.append(msg)
    return children
