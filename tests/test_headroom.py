"""benchmarks/headroom.py: the goal's arithmetic, the critic truth table, and the example structures it scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.headroom import (
    copy_rows,
    critic_knowledge,
    goal_rows,
    label_diverse,
    needed_successes,
    right_answer,
    same_answer,
    split_critic_input,
    structure_genome,
)
from benchmarks.peers.fewshot_arm import knn_fewshot_genome
from benchmarks.stats import mcnemar_exact_p
from genepool.agents import get_agent, load_agent_benchmark
from genepool.core.benchmark import split_items
from genepool.core.genome import Example

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def test_needed_successes_is_the_smallest_significant_lead():
    # 19/32 is the critic bar: +5 points is 21/32, but 2 wins and 0 losses give p = 0.5; 6 wins give p = 0.031
    assert needed_successes(19, 32) == 25
    assert mcnemar_exact_p(6, 0) < 0.05 <= mcnemar_exact_p(5, 0)
    assert needed_successes(19, 32, losses=2) == 27  # 10 wins, 2 losses: p = 0.039; 9 and 2: p = 0.065
    assert mcnemar_exact_p(10, 2) < 0.05 <= mcnemar_exact_p(9, 2)
    # the lead itself binds when the split is large: 60/100 + 5 points = 65, and 5 wins alone are not significant
    assert needed_successes(60, 100) == 66
    assert needed_successes(30, 32) is None  # 32/32 is only 2 wins: nothing out of 32 clears it


def test_needed_successes_refuses_impossible_counts():
    with pytest.raises(ValueError):
        needed_successes(40, 32)
    with pytest.raises(ValueError):
        needed_successes(3, 32, losses=-1)


def _row(arm, outcomes, budget=None, seed=None, tokens=100.0):
    n = len(outcomes)
    return {"arm": arm, "budget": budget, "seed": seed, "status": "ok", "extra": {},
            "test": {"n": n, "successes": sum(outcomes), "success_rate": sum(outcomes) / n, "avg_tokens": tokens,
                     "outcomes": outcomes}}


def test_goal_rows_takes_the_best_non_genepool_arm_and_ties_to_fewer_tokens():
    rows = [
        _row("hand", [1, 1, 0, 0], tokens=300), _row("knn", [1, 0, 1, 0], tokens=100),
        _row("genepool", [1, 1, 1, 1], budget=300, seed=1), _row("broken", [0, 0, 0, 0]) | {"status": "error"},
    ]
    g = goal_rows(rows, "x")
    assert g["best_other_arm"] == "knn"  # same success as hand, fewer tokens
    assert g["genepool_runs"] == [{"budget": 300, "seed": 1, "successes": 4, "items_only_genepool_solves": 2,
                                   "items_only_best_solves": 0}]


def test_right_answer_matches_every_generated_critic_verdict():
    items = load_agent_benchmark("critic")
    assert len(items) == 96
    for it in items:
        question, proposed = split_critic_input(it.input)
        assert (right_answer(question) == proposed) == (it.expected == "correct"), it.id


def test_right_answer_names_an_unknown_question():
    with pytest.raises(ValueError, match="no rule"):
        right_answer("Who wrote Hamlet?")
    with pytest.raises(ValueError, match="no rule"):
        right_answer("What is the capital of Atlantis?")
    with pytest.raises(ValueError, match="Proposed answer"):
        split_critic_input("Is it correct?")


@pytest.mark.parametrize(("output", "right", "ok"), [
    ("Rome", "Rome", True), ("rome.", "Rome", True), ("11 x 2 = 22", "22", True),
    ("capital of Italy is Rome\nmore", "Rome", True), ("Rome is the capital", "Rome", False), ("", "Rome", False),
    ("22 or 23", "22", False),
])
def test_same_answer_reads_the_last_word_of_the_first_line(output, right, ok):
    assert same_answer(output, right) is ok


def test_critic_knowledge_splits_verdicts_by_what_the_model_knows():
    items = load_agent_benchmark("critic")
    test_ids = [it.id for it in split_items(items, "test")]
    asked = []

    def fake_chat(messages):  # a test double: knows only the geography questions
        asked.append(messages)
        q = messages[-1]["content"]
        return right_answer(q) if "capital" in q else "no idea"

    verdicts = [1] * len(test_ids)  # an arm right on every test item
    out = critic_knowledge(fake_chat, items, [_row("arm", verdicts)], test_ids)
    assert out["asked"] == len([i for i in items if i.split != "train"]) == len(asked)
    geo = [i for i in test_ids if "geography" in i]
    assert out["test_items_model_knows"] == f"{len(geo)}/{len(test_ids)}"
    assert out["arms"][0]["verdicts_right_where_model_knows"] == f"{len(geo)}/{len(geo)}"
    # the shots are train questions with their right answers, one per domain, never a scored item
    shots = asked[0][1:-1]
    assert len(shots) == 8 and all(s["content"] != asked[0][-1]["content"] for s in shots)


def test_critic_knowledge_with_the_real_model_is_free_to_re_run(db):
    """The real path: SmolLM2 through the cached LLMClient on PostgreSQL, a few critic questions."""
    from benchmarks.headroom import critic_chat
    from benchmarks.peers.common import MeteredLLM
    from genepool.llm import LlamaCppProvider, LLMClient

    items = load_agent_benchmark("critic")
    few = [it for it in items if it.split == "train"] + [it for it in items if it.split == "test"][:4]
    test_ids = [it.id for it in few if it.split == "test"]
    client = LLMClient(LlamaCppProvider(), db)
    first, again = MeteredLLM(client), MeteredLLM(client)
    a = critic_knowledge(critic_chat(first), few, [], test_ids)
    b = critic_knowledge(critic_chat(again), few, [], test_ids)
    assert a == b and a["asked"] == 4 and 0 <= a["answered_right"] <= 4
    assert first.summary("test")["calls"] == 4 and first.summary("test")["cached"] == 0
    assert again.summary("test")["cached"] == 4  # a re-run makes no model call


def test_label_diverse_shows_each_label_before_a_second_of_any():
    ex = [Example(str(i), o) for i, o in enumerate(["neg", "neg", "pos", "neg", "neu"])]
    assert [e.output for e in label_diverse(ex, 3)] == ["neg", "pos", "neu"]
    assert [e.input for e in label_diverse(ex, 4)] == ["0", "1", "2", "4"]  # nearest-first order kept
    assert label_diverse(ex, 0) == []


def test_structures_reproduce_the_knn_arm_and_their_variants():
    spec = get_agent("support-desk")
    items = load_agent_benchmark("support-desk")
    train, test = split_items(items, "train"), split_items(items, "test")
    pool = knn_fewshot_genome(spec.seed_genome, train, 1)
    knn4 = knn_fewshot_genome(spec.seed_genome, train, 4)
    for it in test[:20]:
        assert structure_genome(pool, "nearest:4", it.input).messages(it.input) == knn4.messages(it.input)
        near = structure_genome(pool, "nearest:4", it.input).examples
        assert structure_genome(pool, "nearest_first:4", it.input).examples == tuple(reversed(near))
        div = structure_genome(pool, "diverse:4", it.input).examples
        assert div[-1] == near[-1]  # the nearest example stays next to the question
        assert len(div) == 4 and set(div) <= set(pool.examples)
        assert len({e.output for e in div}) >= len({e.output for e in near})


def test_copy_rows_counts_items_whose_nearest_example_carries_the_answer():
    spec = get_agent("support-desk")
    items = load_agent_benchmark("support-desk")
    train, test = split_items(items, "train"), split_items(items, "test")
    g = knn_fewshot_genome(spec.seed_genome, train, 4)
    wrong_everywhere = copy_rows(g, test, [0] * len(test))
    right_everywhere = copy_rows(g, test, [1] * len(test))
    n = wrong_everywhere["items_nearest_shows_the_answer"]
    assert 0 < n == right_everywhere["items_nearest_shows_the_answer"] < len(test)
    assert (wrong_everywhere["solved"], right_everywhere["solved"]) == (0, n)
    assert "order_id" not in right_everywhere["per_task"]  # only label tasks can be copied


def test_committed_headroom_matches_the_committed_comparisons():
    doc = json.loads((RESULTS / "headroom.json").read_text(encoding="utf-8"))
    for goal in doc["goal"]:
        cmp = json.loads((RESULTS / goal["agent_type"] / "compare.json").read_text(encoding="utf-8"))
        assert goal == goal_rows(cmp["results"], goal["agent_type"])
