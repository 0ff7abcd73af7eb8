"""Step 3, mutated population: children bred from production and the previous front with DEAP operators
(reflection through the step's budget); each must render and pass the sanity check, and a rejected child
is stored with the reason, never registered, never run."""

from __future__ import annotations

from dataclasses import dataclass

from genepool import store
from genepool.core.benchmark import split_items
from genepool.core.evolution import BreedContext, breed
from genepool.core.genome import Genome
from genepool.core.sanity import sanity_check
from genepool.keys import partition_key
from genepool.registry import PromptRecord
from genepool.steps.clusters import FailureClusters
from genepool.steps.context import OPTIMISER_ACTOR, Generation
from genepool.steps.traces import TraceSet


@dataclass(frozen=True)
class Parent:
    prompt_id: str
    version: str
    state: str | None


@dataclass(frozen=True)
class Candidate:
    position: int
    prompt_id: str | None  # None when rejected (never registered)
    operator: str
    parent_ids: tuple[str, ...]
    status: str  # "accepted" | "rejected"
    reason: str
    genome: Genome

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    def to_dict(self) -> dict:
        return {"position": self.position, "prompt_id": self.prompt_id, "operator": self.operator,
                "parent_ids": list(self.parent_ids), "status": self.status, "reason": self.reason,
                "genome": self.genome.to_dict()}


@dataclass(frozen=True)
class Population:
    partition_key: str
    parents: tuple[Parent, ...]  # production first
    children: tuple[Candidate, ...]
    notes: tuple[str, ...]

    @property
    def production_id(self) -> str:
        return self.parents[0].prompt_id

    @property
    def accepted(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.children if c.accepted)

    @property
    def contenders(self) -> list[str]:
        """Who the experiments run: the carried-over parents, then the accepted children."""
        return [p.prompt_id for p in self.parents[1:]] + [c.prompt_id for c in self.accepted if c.prompt_id]

    def to_dict(self) -> dict:
        return {"partition_key": self.partition_key,
                "parents": [{"prompt_id": p.prompt_id, "version": p.version, "state": p.state} for p in self.parents],
                "children": [c.to_dict() for c in self.children], "notes": list(self.notes)}


def parent_prompts(gen: Generation) -> list[PromptRecord]:
    """Production first, then the previous generation's best front members and per-instance survivors
    (those that solved something, at most ``max_parents``)."""
    parents = [gen.production()]
    if gen.generation > 0:
        for pid in store.previous_front(gen.db, partition_key(gen.agent_type, gen.generation - 1),
                                        gen.config.max_parents):
            if pid not in {p.id for p in parents}:
                parents.append(gen.registry.get(pid))
    return parents


def mutate_population(gen: Generation, traces: TraceSet, clusters: FailureClusters) -> Population:
    assert gen.items is not None
    with gen.step("population") as meter:
        parents = parent_prompts(gen)
        rows = traces.rows()
        heldout = split_items(gen.items, "test")
        reflect = meter.using(gen.reflection_llm)
        ctx = BreedContext(
            pool=gen.agent.instruction_pool,
            clusters=clusters.clusters,
            successes=[r for r in rows if r.success],
            labelled=split_items(gen.items, "train"),
            llm=reflect,
            n_reflect=gen.config.n_reflect if reflect is not None else 0,
            max_examples=gen.config.max_examples,
            max_pool=gen.config.example_pool_size,
            examples_per_mine=gen.config.examples_per_mine,
            forbidden_inputs=frozenset(i.input for i in heldout),
            partition_key=gen.key,
        )
        children = breed([p.genome for p in parents], gen.config.population_size, gen.rng("population"), ctx)
        heldout_text = {i.input for i in heldout}
        out: list[Candidate] = []
        for pos, child in enumerate(children):
            parent_ids = tuple(parents[i].id for i in child.parent_indices)
            verdict = sanity_check(child.genome, heldout_answers=heldout_text)
            prompt_id = None
            if verdict.ok:
                prompt_id = gen.registry.register(
                    gen.agent_type, child.genome, parent_ids=list(parent_ids), experiment_id=gen.key,
                    generation=gen.generation, operator=child.operator, actor=OPTIMISER_ACTOR,
                ).id
            out.append(Candidate(pos, prompt_id, child.operator, parent_ids, "accepted" if verdict.ok else "rejected",
                                 "; ".join(verdict.reasons), child.genome))
        store.replace_candidates(gen.db, gen.key, [c.to_dict() for c in out])
    return Population(gen.key, tuple(Parent(p.id, p.version, p.state) for p in parents), tuple(out), tuple(ctx.notes))
