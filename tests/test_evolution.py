import os
import subprocess
import sys

import pytest

from genepool.core.clustering import cluster_failures
from genepool.core.evolution import DEFAULT_MUTATION_WEIGHTS, BreedContext, Child, breed, generation_rng, make_toolbox
from genepool.core.genome import Example, Genome, Params
from genepool.llm import LLMClient, RawCompletion

SEED = Genome(
    role="You classify customer messages.",
    instructions=("Answer with the label only, no other words.",),
    examples=(Example("I love it", "positive"),),
    params=Params(0.0, 48, ()),
)
OTHER = Genome(
    role="You are a support-desk assistant.",
    instructions=("Be brief.", "Reply with only the number."),
    examples=(),
    params=Params(0.2, 16, ("\n",)),
    example_format="inline",
)
REPLY = "PROMPT 1:\n- Reply with only the label.\n- Do not explain.\nPROMPT 2:\n- Answer in one word."


class ScriptedProvider:
    """Test double of an LLM provider: returns one fixed reply and counts calls; can be set to refuse."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, reply: str, refuse: bool = False):
        self.reply, self.refuse, self.calls = reply, refuse, 0

    def complete(self, messages, params):
        if self.refuse:
            raise AssertionError("ScriptedProvider: called although the answer should come from the cache")
        self.calls += 1
        return RawCompletion(self.reply, 100, 20, 5.0)


def _ctx(llm=None, **kw):
    failed = [
        {"trace_id": f"t{i}", "task": "sentiment", "signature": "label_with_extra_text", "success": False}
        for i in range(4)
    ]
    return BreedContext(
        pool=["Be polite.", "Use the customer's words.", "Never guess."],
        clusters=cluster_failures(failed, 10),
        successes=[{"task": "sentiment", "input": "Great app", "output": "positive", "success": True}],
        labelled=[
            {"task": "sentiment", "input": "Slow and buggy", "expected": "negative", "split": "train"},
            {"task": "extract", "input": "Order 42 is late", "expected": 42, "split": "train"},
        ],
        llm=llm,
        n_reflect=2 if llm else 0,
        **kw,
    )


def _dump(children):
    return [(c.genome.canonical_json(), c.operator, c.parent_indices) for c in children]


def test_generation_rng_is_stable_across_processes():
    a = generation_rng(7, "support-desk", 3).random()
    assert a == generation_rng(7, "support-desk", 3).random()
    assert a != generation_rng(7, "support-desk", 4).random() != generation_rng(8, "support-desk", 3).random()
    code = (
        "from genepool.core.evolution import generation_rng; "
        "print(repr(generation_rng(7, 'support-desk', 3).random()))"
    )
    for hashseed in ("1", "999"):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": hashseed},
        ).stdout.strip()
        assert float(out) == a


def test_breed_makes_distinct_children_deterministically():
    parents = [SEED, OTHER]
    kids = breed(parents, 12, generation_rng(1, "support-desk", 1), _ctx())
    assert len(kids) == 12 and all(isinstance(k, Child) for k in kids)
    fps = {k.genome.fingerprint() for k in kids}
    assert len(fps) == 12 and not fps & {p.fingerprint() for p in parents}
    assert all(all(0 <= i < len(parents) for i in k.parent_indices) for k in kids)
    assert len({k.operator for k in kids}) >= 3
    for k in kids:
        if k.operator == "crossover":
            assert len(k.parent_indices) == 2
    again = breed(parents, 12, generation_rng(1, "support-desk", 1), _ctx())
    assert _dump(again) == _dump(kids)
    other_seed = breed(parents, 12, generation_rng(2, "support-desk", 1), _ctx())
    assert _dump(other_seed) != _dump(kids)


def test_every_operator_is_used_across_generations():
    ops_seen = set()
    rule_ops = {"add_instruction", "remove_instruction", "rephrase_instruction", "mine_examples", "drop_example",
                "mutate_params"}  # the example-set operators are covered in tests/test_example_ops.py
    weights = {k: v for k, v in DEFAULT_MUTATION_WEIGHTS.items() if k in rule_ops}
    for gen in range(6):
        ops_seen |= {k.operator for k in breed([SEED, OTHER], 12, generation_rng(1, "support-desk", gen),
                                               _ctx(mutation_weights=weights))}
    assert ops_seen == {"crossover"} | rule_ops


def test_breed_with_one_parent_and_no_crossover_and_bounded_tries():
    ctx = _ctx(cx_prob=0.0, mut_prob=1.0, mutation_weights={"remove_instruction": 1.0})
    kids = breed([SEED], 5, generation_rng(1, "a", 1), ctx)
    # removing the only instruction gives exactly one distinct child; the rest are redrawn until tries run out
    assert [k.operator for k in kids] == ["remove_instruction"]
    assert kids[0].genome.instructions == ()
    assert any("made 1 of 5" in n for n in ctx.notes)


def test_breed_context_validation():
    with pytest.raises(ValueError, match="cx_prob"):
        BreedContext(cx_prob=1.5)
    with pytest.raises(ValueError, match="unknown operators"):
        BreedContext(mutation_weights={"teleport": 1.0})
    with pytest.raises(ValueError, match="at least one parent"):
        breed([], 3, generation_rng(0, "a", 0), BreedContext())


def test_toolbox_registers_every_operator():
    tb = make_toolbox(_ctx())
    for name in ("mate", "add_instruction", "remove_instruction", "rephrase_instruction", "mine_examples",
                 "drop_example", "mutate_params", "reflect"):
        assert callable(getattr(tb, name))


def test_breed_with_reflection_is_identical_when_served_from_the_cache(db):
    provider = ScriptedProvider(REPLY)
    first = breed([SEED, OTHER], 8, generation_rng(5, "support-desk", 2),
                  _ctx(LLMClient(provider, db), partition_key="support-desk/g0002"))
    assert provider.calls == 1
    reflected = [k for k in first if k.operator == "reflect"]
    assert sorted(k.genome.instructions for k in reflected) == [
        ("Answer in one word.",),
        ("Reply with only the label.", "Do not explain."),
    ]
    assert all(k.parent_indices == (0,) for k in reflected)
    cached_client = LLMClient(ScriptedProvider(REPLY, refuse=True), db)
    second = breed([SEED, OTHER], 8, generation_rng(5, "support-desk", 2),
                   _ctx(cached_client, partition_key="support-desk/g0002"))
    assert cached_client.calls_cached == 1
    assert _dump(second) == _dump(first)
    row = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE purpose = 'reflect'"
                      " AND partition_key = 'support-desk/g0002'")
    assert row["n"] == 2
