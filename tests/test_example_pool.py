"""Nearest-example pools (``Genome.example_select``): which examples a request shows, the genome's JSON, the
limits, and the operators that make and move pools."""

from __future__ import annotations

import random

import pytest

from genepool.core import example_ops as xo
from genepool.core import operators as ops
from genepool.core.benchmark import Item
from genepool.core.genome import Example, Genome, GenomeError, Params, limit_problems, nearest_examples
from genepool.core.sanity import sanity_check

POOL_EXAMPLES = (
    Example("Rate the priority of this ticket: the app crashes at login", "high"),
    Example("Classify the sentiment of this message: I love the new lamp", "positive"),
    Example("Extract the order number from this message: order #123 never came", "123"),
    Example("Classify the sentiment of this message: the lamp broke on day one", "negative"),
    Example("Rate the priority of this ticket: please update my address", "low"),
)


def test_a_request_shows_the_k_nearest_examples_most_similar_last():
    g = Genome(role="You help.", examples=POOL_EXAMPLES, example_select=2)
    shown = g.shown_examples("Classify the sentiment of this message: the lamp is lovely")
    assert shown == (POOL_EXAMPLES[3], POOL_EXAMPLES[1])  # the two sentiment examples, the closer one last
    msgs = g.messages("Classify the sentiment of this message: the lamp is lovely")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[3]["content"] == POOL_EXAMPLES[1].input and msgs[-1]["content"].endswith("lovely")
    # another input, other neighbours; the same input, the same messages (a stable cache key)
    assert g.shown_examples("Rate the priority of this ticket: my order is late") == (POOL_EXAMPLES[0],
                                                                                      POOL_EXAMPLES[4])
    # equally near examples: the earlier in the pool counts as nearer (a stable order, the same cache key)
    tie = Genome(role="You help.", examples=(Example("alpha beta", "1"), Example("alpha gamma", "2")), example_select=1)
    assert tie.shown_examples("alpha") == (tie.examples[0],)
    assert tie.with_(examples=tie.examples[::-1]).shown_examples("alpha") == (tie.examples[1],)


def test_an_example_is_never_shown_for_its_own_input():
    own = POOL_EXAMPLES[2].input
    shown = nearest_examples(POOL_EXAMPLES, "  " + own.upper() + " ", 3)
    assert POOL_EXAMPLES[2] not in shown and len(shown) == 3
    # k larger than the pool: all the others, no error
    assert len(nearest_examples(POOL_EXAMPLES, own, 10)) == 4


def test_example_select_round_trips_and_leaves_earlier_genomes_unchanged():
    fixed = Genome(role="You help.", examples=POOL_EXAMPLES)
    assert "example_select" not in fixed.to_dict()  # an earlier genome: same JSON, same fingerprint, same id
    assert fixed.shown_examples("anything") == POOL_EXAMPLES
    pooled = fixed.with_(example_select=2)
    assert pooled.to_dict()["example_select"] == 2
    assert Genome.from_dict(pooled.to_dict()) == pooled
    assert pooled.fingerprint() != fixed.fingerprint()


@pytest.mark.parametrize("bad", [-1, True, 2.0, "2", 10_000])
def test_a_bad_example_select_is_refused_naming_the_field(bad):
    d = Genome(role="You help.", examples=POOL_EXAMPLES).to_dict() | {"example_select": bad}
    with pytest.raises(GenomeError, match=r"^example_select: .*use an integer"):
        Genome.from_dict(d)


def test_a_pool_must_be_chat_turns():
    g = Genome(role="You help.", examples=POOL_EXAMPLES, example_select=2, example_format="inline")
    assert [f for f, _ in limit_problems(g)] == ["example_select"]
    with pytest.raises(GenomeError, match="example_select"):
        g.messages("hello")


def test_sanity_counts_only_the_examples_a_request_can_show():
    big = tuple(Example(f"question number {i} " + "word " * 60, "yes") for i in range(40))
    fixed = Genome(role="You answer questions.", examples=big)
    assert not sanity_check(fixed).ok  # 40 long turns at once: over the length limit
    assert sanity_check(fixed.with_(example_select=3)).ok  # at most 3 of them per request


def items(task: str, labels: list[str]) -> list[Item]:
    meta = {"labels": sorted(set(labels))}
    return [Item(f"{task}{i}", f"{task} question {i}", lab, "exact_label", "train", task, meta)
            for i, lab in enumerate(labels)]


TRAIN = items("sent", ["pos"] * 9 + ["neg"] * 3) + items("prio", ["low", "high"] * 5)
POOL = xo.ExamplePool(labelled=TRAIN)


def test_knn_init_makes_a_label_balanced_pool_of_every_task():
    g = xo.knn_init(Genome(role="You classify."), random.Random(0), POOL, k=3, max_pool=8)
    assert g.example_select == 3 and g.example_format == "turns" and g.params.stop == ("\n",)
    tasks = [POOL.task_of(e) for e in g.examples]
    assert tasks.count("sent") == 4 and tasks.count("prio") == 4
    sent = [e.output for e in g.examples if POOL.task_of(e) == "sent"]
    assert sorted(sent) == ["neg", "neg", "pos", "pos"]  # balanced although pos is 3x as frequent
    whole = xo.knn_init(Genome(role="You classify."), random.Random(0), POOL, k=2, max_pool=96)
    assert len(whole.examples) == len(TRAIN)  # a cap above the split: every labelled example
    assert xo.knn_init(Genome(role="x"), random.Random(0), xo.ExamplePool(), k=2) == Genome(role="x")


def test_tune_select_moves_k_and_switches_between_fixed_and_pool():
    fixed = Genome(role="You help.", examples=POOL_EXAMPLES)
    seen = {xo.tune_select(fixed, random.Random(s), max_examples=10).example_select for s in range(40)}
    assert seen == {1, 2, 3, 4}  # k < pool size
    pooled = fixed.with_(example_select=2)
    seen = {xo.tune_select(pooled, random.Random(s), max_examples=10).example_select for s in range(40)}
    assert seen == {0, 1, 3, 4}
    # a pool larger than a fixed set may hold never becomes one
    assert 0 not in {xo.tune_select(pooled, random.Random(s), max_examples=3).example_select for s in range(40)}
    assert xo.tune_select(Genome(role="x", examples=POOL_EXAMPLES[:1]), random.Random(0)).example_select == 0


def test_pool_moves_that_would_be_no_ops_or_invalid_are_not_made():
    pooled = Genome(role="You help.", examples=POOL_EXAMPLES, example_select=2)
    assert xo.reorder_example(pooled, random.Random(0)) == pooled  # order only breaks ties
    for s in range(30):
        child = ops.mutate_params(pooled, random.Random(s))
        assert child.example_format == "turns" and not limit_problems(child)
    fixed = Genome(role="You help.", examples=POOL_EXAMPLES[:2], params=Params(stop=("\n",)))
    for s in range(30):
        a, b = ops.crossover(pooled, fixed, random.Random(s))
        for c in (a, b):
            assert not limit_problems(c)
            if len(c.examples) > 2:  # more examples than the fixed parent shows: still a pool
                assert c.example_select > 0


def test_the_approval_dump_says_a_pool_shows_only_the_nearest():
    from datetime import UTC, datetime

    from genepool.approval import genome_dump
    from genepool.registry import PromptRecord

    g = Genome(role="You help.", examples=POOL_EXAMPLES, example_select=2)
    rec = PromptRecord("p1", "support-desk", "v1", g.content(), g, (), None, 1, "knn_init", datetime.now(UTC))
    dump = genome_dump(rec)
    assert "[few-shot examples: a pool; each request shows the 2 whose input is nearest its own, as turns]" in dump
    assert "    example_select: 2" in dump
    assert "example_select" not in genome_dump(PromptRecord("p0", "support-desk", "v0", "x",
                                                            g.with_(example_select=0), (), None, 0, "seed",
                                                            datetime.now(UTC)))


def test_the_pool_size_setting_is_bounded_by_the_genome_limit():
    from genepool.settings import GenerationConfig
    from genepool.validation import MAX_EXAMPLES

    assert GenerationConfig(example_pool_size=MAX_EXAMPLES).example_pool_size == MAX_EXAMPLES
    with pytest.raises(ValueError, match="example_pool_size=129 and max_examples=10 must be at most 128"):
        GenerationConfig(example_pool_size=MAX_EXAMPLES + 1)
