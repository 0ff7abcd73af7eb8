"""Example-set operators (genepool/core/example_ops.py) and their registration in the breeder."""

from __future__ import annotations

import random
from collections import Counter

from genepool.core import example_ops as xo
from genepool.core.benchmark import Item
from genepool.core.clustering import FailureCluster
from genepool.core.evolution import BreedContext, breed, generation_rng
from genepool.core.genome import Example, Genome, Params


def item(i: int, task: str, label: str, split: str = "train") -> Item:
    return Item(f"{task}{i}", f"{task} question {i}", label, "exact_label", split, task, {"labels": ["a", "b"]})


TRAIN = [item(i, "sent", "pos" if i < 6 else "neg") for i in range(8)] + [
    item(i, "prio", "low" if i % 2 else "high") for i in range(6)
]
HELDOUT = [item(99, "sent", "pos", split="test")]
POOL = xo.ExamplePool(labelled=TRAIN + HELDOUT, forbidden_inputs={"sent question 0"})
SEED = Genome(role="You classify.", examples=(Example("sent question 1", "pos"),))


def cluster(task: str, count: int) -> FailureCluster:
    return FailureCluster(f"{task}:x", task, 1.0, count, (), (), (task,), "hint")


def test_pool_keeps_train_only_and_drops_forbidden_inputs():
    inputs = {e.example.input for e in POOL.entries}
    assert "sent question 99" not in inputs  # test split
    assert "sent question 0" not in inputs  # forbidden (held out)
    assert len(POOL) == 13 and POOL.tasks() == ["prio", "sent"]
    boot = xo.ExamplePool(successes=[{"input": "sent question 3", "output": "pos", "task": "sent", "success": True},
                                     {"input": "sent question 4", "output": "bad", "task": "sent", "success": False}])
    assert [(e.source, e.example.output) for e in boot.entries] == [("bootstrapped", "pos")]


def test_add_example_is_label_balanced_and_follows_failures():
    rng = random.Random(0)
    g = SEED
    for _ in range(4):  # failures only in "sent": with weights 1 vs 1+50 almost always sent
        g = xo.add_example(g, rng, POOL, clusters=[cluster("sent", 50)], max_examples=10)
    tasks = Counter(POOL.task_of(e) for e in g.examples)
    labels = Counter(e.output for e in g.examples if POOL.task_of(e) == "sent")
    assert tasks["sent"] >= 4
    assert abs(labels["pos"] - labels["neg"]) <= 1  # balanced although the pool has 5 pos and 2 neg
    assert len({e.input for e in g.examples}) == len(g.examples)  # no duplicate
    full = g.with_(examples=g.examples[:2])
    assert xo.add_example(full, rng, POOL, max_examples=2) == full  # at the cap: unchanged


def test_swap_replaces_within_the_task_with_the_rarer_label():
    g = SEED.with_(examples=(Example("sent question 1", "pos"), Example("sent question 2", "pos")))
    child = xo.swap_example(g, random.Random(1), POOL)
    assert len(child.examples) == 2 and child != g
    assert all(POOL.task_of(e) == "sent" for e in child.examples)
    assert Counter(e.output for e in child.examples) == {"pos": 1, "neg": 1}


def test_drop_redundant_and_reorder():
    g = SEED.with_(examples=(Example("sent question 1", "pos"), Example("sent question 2", "pos"),
                             Example("sent question 6", "neg"), Example("prio question 1", "low")))
    child = xo.drop_example_redundant(g, random.Random(0), POOL)
    assert len(child.examples) == 3 and Counter(e.output for e in child.examples)["pos"] == 1
    assert any(POOL.task_of(e) == "prio" for e in child.examples)  # the only prio example stays
    single = SEED.with_(examples=(Example("prio question 1", "low"),))
    assert xo.drop_example_redundant(single, random.Random(0), POOL) == single
    moved = xo.reorder_example(g, random.Random(2))
    assert moved != g and sorted(moved.examples, key=lambda e: e.input) == sorted(g.examples, key=lambda e: e.input)
    assert xo.reorder_example(single, random.Random(0)) == single


def test_tune_decoding_sets_newline_stop_or_fits_max_tokens():
    g = SEED.with_(params=Params(0.0, 48, ()))
    seen = {xo.tune_decoding(g, random.Random(s)).params for s in range(10)}
    assert Params(0.0, 48, ("\n",)) in seen and Params(0.0, 8, ()) in seen
    done = g.with_(params=Params(0.0, 8, ("\n",)))
    assert xo.tune_decoding(done, random.Random(0)) == done


def test_breeder_uses_the_example_operators_deterministically():
    ctx = dict(labelled=TRAIN, clusters=[cluster("prio", 3)], max_examples=6, cx_prob=0.0, mut_prob=1.0,
               mutation_weights={"add_example": 1.0, "swap_example": 1.0, "reorder_example": 1.0,
                                 "drop_example_redundant": 1.0, "tune_decoding": 1.0})
    parents = [SEED.with_(examples=(Example("sent question 1", "pos"), Example("prio question 1", "low")))]
    kids = breed(parents, 6, generation_rng(7, "a", 1), BreedContext(**ctx))
    again = breed(parents, 6, generation_rng(7, "a", 1), BreedContext(**ctx))
    assert [k.genome for k in kids] == [k.genome for k in again]
    assert {k.operator for k in kids} <= set(ctx["mutation_weights"]) and len({k.operator for k in kids}) >= 3
    assert all(e.input not in {"sent question 99"} for k in kids for e in k.genome.examples)


def test_fit_generation_shrinks_children_before_starving_validation():
    from dataclasses import replace

    from genepool.settings import GenerationConfig
    from genepool.steps.loop import fit_generation, generation_cost

    cfg = GenerationConfig(trace_items=40, population_size=8, n_targets=12, n_controls=8, validate_top=3,
                           validation_items=30, max_parents=4)
    assert generation_cost(cfg, 0, 60) == 40 + 20 * 8 + 30 * 4 == 320
    full = fit_generation(cfg, 1000, 0, 60)
    assert full is not None and full.population_size == 8 and full.max_rollouts == 1000
    small = fit_generation(cfg, 300, 0, 60)  # 300 - 40 - 120 leaves 140 = 7 children
    assert small is not None and small.population_size == 7 and generation_cost(small, 0, 60) <= 300
    tight = fit_generation(cfg, 40 + 2 * 20 + 30 * 2, 4, 60)  # room for 2 children, 1 validated, no parents
    assert tight is not None and (tight.population_size, tight.validate_top, tight.max_parents) == (2, 1, 0)
    assert fit_generation(cfg, 100, 0, 60) is None  # cannot validate even one child: not started
    # a small train split is traced whole and bounds the regression set: 12 + 12 * 2 + 8 * 2 = 52
    assert generation_cost(replace(cfg, population_size=2, validate_top=1), 0, 8, n_train=12) == 52
    assert fit_generation(cfg, 60, 0, 8, n_train=12) is not None


def test_last_generation_absorbs_a_leftover_too_small_for_another():
    from genepool.settings import GenerationConfig
    from genepool.steps.loop import absorb_leftover, fit_generation, generation_cost

    cfg = GenerationConfig(trace_items=40, population_size=8, n_targets=12, n_controls=8, validate_top=3,
                           validation_items=24, max_parents=4)
    one = fit_generation(cfg, 300, 0, 24, n_train=40)  # 40 + 20 * 8 + 24 * 4 = 296: 4 left, cannot be used
    assert one is not None and generation_cost(one, 0, 24, 40) == 296
    # 1000 leaves room for more generations: unchanged
    assert absorb_leftover(cfg, 1000, 0, 24, 40) == cfg
    # 380 leaves 84, less than the smallest next generation (40 + 20 * 2 + 24 * 2 = 128): validate more, then breed more
    grown = absorb_leftover(cfg, 380, 0, 24, 40)
    assert grown.validate_top > cfg.validate_top and generation_cost(grown, 0, 24, 40) <= 380
    assert 380 - generation_cost(grown, 0, 24, 40) < 20  # what is left cannot buy one more child


def test_fewshot_init_builds_a_label_balanced_set_per_task_with_one_line_answers():
    bare = Genome(role="You classify.")
    sets = set()
    for s in range(6):
        g = xo.fewshot_init(bare, random.Random(s), POOL, per_task=2, max_examples=10)
        by_task = Counter(POOL.task_of(e) for e in g.examples)
        assert by_task == {"sent": 2, "prio": 2}
        for task in ("sent", "prio"):
            assert len({e.output for e in g.examples if POOL.task_of(e) == task}) == 2  # both labels shown
        assert g.params.stop == ("\n",) and g.example_format == "turns"
        assert not {e.input for e in g.examples} & {"sent question 0", "sent question 99"}  # held out: never
        sets.add(g.examples)
    assert len(sets) > 1  # random draws: siblings differ
    # the cap wins over per_task: 3 examples for 2 tasks is 1 per task
    assert len(xo.fewshot_init(bare, random.Random(0), POOL, per_task=2, max_examples=3).examples) == 2


def test_breed_starts_a_bare_seed_with_whole_fewshot_sets_and_not_a_fewshot_parent():
    ctx = BreedContext(labelled=TRAIN, max_examples=10, max_pool=12)
    kids = breed([Genome(role="You classify.")], 6, generation_rng(1, "a", 1), ctx)
    init = kids[: ctx.n_fewshot_init]  # made first, before any random operator
    # nearest-example pools (k = 4, 2) and fixed sets (2 and 1 per task), interleaved
    assert [k.operator for k in init] == ["knn_init", "fewshot_init"] * 2
    assert [k.genome.example_select for k in init] == [4, 0, 2, 0]
    assert [len(k.genome.examples) for k in init[1::2]] == [4, 2]
    assert all(len(k.genome.examples) == 12 for k in init[::2])  # 6 per task, the pool's cap
    fewshot_parent = init[1].genome
    later = breed([fewshot_parent], 6, generation_rng(1, "a", 2), BreedContext(labelled=TRAIN, max_examples=10))
    assert [k.operator for k in later[:2]] == ["knn_init", "knn_init"]  # not a pool yet: pools first
    assert "fewshot_init" not in [k.operator for k in later[:2]]  # it is a few-shot prompt already
    pool_parent = init[0].genome
    again = breed([pool_parent], 6, generation_rng(1, "a", 3), BreedContext(labelled=TRAIN, max_examples=10))
    assert [k.operator for k in again[:2]] != ["knn_init", "knn_init"]  # a pool already: no init phase
    off = BreedContext(labelled=TRAIN, mutation_weights={"mine_examples": 1.0})
    assert all(k.operator not in ("fewshot_init", "knn_init")
               for k in breed([Genome(role="x")], 4, generation_rng(1, "a", 1), off))
