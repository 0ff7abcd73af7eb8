"""The peer comparison (benchmarks/compare.py): argument checks, accounting, scoring, outputs, and a
real end-to-end run of the baseline, GEPA and DSPy-labeled arms on a few items with the local model."""

from __future__ import annotations

import json

import pytest

from benchmarks import compare
from benchmarks.peers import baseline_arm
from benchmarks.peers.common import (
    ArmContext,
    ArmResult,
    MeteredLLM,
    RolloutBudgetExhausted,
    evaluate_outputs,
    is_reflection,
)
from genepool.core.benchmark import Item
from genepool.core.genome import Genome
from genepool.llm import Completion, LlamaCppProvider, LLMClient


def _item(i: int, task: str = "sentiment", expected: str = "positive", split: str = "test") -> Item:
    return Item(f"it{i}", f"Classify the sentiment (positive, negative or neutral): msg {i}", expected,
                "exact_label", split, task, {"labels": ["positive", "negative", "neutral"]})


class FakeClient:
    """Test double for LLMClient: answers from a fixed list, no model, no database."""

    model = "fake"
    db = None
    calls_made = 0

    def __init__(self, answers: list[str]):
        self.answers = list(answers)

    def chat(self, messages, params=None, *, purpose="", partition_key=None):
        text = self.answers.pop(0)
        return Completion(text, 10, 2, 5.0, 0.0, False, "h")


def test_parse_args_budgets_and_arms():
    a = compare.parse_args([])
    assert a.budgets == [300, 1000] and a.arms == list(compare.ALL_ARMS) and a.seeds == 3
    assert a.out == compare.RESULTS_DIR / "support-desk"
    assert compare.parse_args(["--agent", "critic", "--quick"]).out == compare.RESULTS_DIR / "critic-quick"
    with pytest.raises(SystemExit):
        compare.parse_args(["--seeds", "0"])
    assert compare.parse_args(["--with-3000"]).budgets == [300, 1000, 3000]
    assert compare.parse_args(["--quick"]).budgets == list(compare.QUICK_BUDGETS)
    assert compare.parse_args(["--budgets", "100"]).budgets == [100]
    with pytest.raises(SystemExit):
        compare.parse_args(["--budgets", "ten"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--budgets", "0"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--arms", "baseline,opro"])


def test_stratified_subset_takes_first_items_of_each_task():
    items = [_item(i, task="a" if i % 3 else "b") for i in range(12)]
    sub = compare.stratified_subset(items, 2)
    assert [it.id for it in sub] == ["it0", "it1", "it2", "it3"]
    assert sorted(it.task for it in sub) == ["a", "a", "b", "b"]


def test_metered_llm_separates_rollouts_reflection_and_test():
    llm = MeteredLLM(FakeClient(["positive"] * 4))
    with llm.phase("optimize"):
        llm.chat([], purpose="gepa:task")
        llm.chat([], purpose="gepa:reflection")
        llm.chat([], purpose="reflect")
    with llm.phase("test"):
        llm.chat([], purpose="bench:test")
    opt = llm.summary("optimize")
    assert (opt["calls"], opt["rollouts"], opt["reflection_calls"]) == (3, 1, 2)
    assert opt["prompt_tokens"] == 30 and opt["model_ms"] == 15.0
    assert llm.summary("test")["rollouts"] == 1
    assert llm.calls_made == 0  # attributes come from the wrapped client
    assert is_reflection("dspy:prompt_model") and not is_reflection("traces")


def test_metered_llm_cap_refuses_rollouts_past_the_budget_only():
    llm = MeteredLLM(FakeClient(["positive"] * 10), rollout_cap=2)
    with llm.phase("optimize"):
        llm.chat([], purpose="dspy:task")
        llm.chat([], purpose="dspy:prompt_model")  # reflection: not a rollout, never refused
        llm.chat([], purpose="dspy:task")
        with pytest.raises(RolloutBudgetExhausted, match="2 rollouts"):
            llm.chat([], purpose="dspy:task")
        llm.chat([], purpose="dspy:prompt_model")
    with llm.phase("test"):
        llm.chat([], purpose="dspy:task")  # the test evaluation is never refused
    opt = llm.summary("optimize")
    assert (opt["rollouts"], opt["reflection_calls"], opt["refused_over_cap"], opt["rollout_cap"]) == (2, 2, 1, 2)
    assert len(llm.records) == 5  # the refused call was neither sent nor recorded
    assert "rollout_cap" not in MeteredLLM(FakeClient([])).summary("optimize")


def test_dspy_random_search_stays_within_the_rollout_cap():
    """BootstrapFewShotWithRandomSearch sizes its search in candidates, not calls (its bootstrapping on train
    comes on top); under the cap it spends at most the budget and still returns a program."""
    dspy = pytest.importorskip("dspy")
    from benchmarks.peers import dspy_arm

    class EchoClient(FakeClient):
        """Test double: always answers in DSPy's field format with the label "positive"."""

        def chat(self, messages, params=None, *, purpose="", partition_key=None):
            return Completion("[[ ## answer ## ]]\npositive\n\n[[ ## completed ## ]]", 10, 2, 5.0, 0.0, False, "h")

    train = [_item(i, split="train", expected=("positive", "negative")[i % 2]) for i in range(12)]
    val = [_item(100 + i, split="validation") for i in range(5)]
    by_id = {it.id: it for it in [*train, *val]}
    llm = MeteredLLM(EchoClient([]), rollout_cap=20)
    task_lm, _ = dspy_arm._lms(llm)
    with llm.phase("optimize"), dspy.context(lm=task_lm):
        tp = dspy.BootstrapFewShotWithRandomSearch(metric=dspy_arm._metric(by_id), max_bootstrapped_demos=2,
                                                   max_labeled_demos=2, num_candidate_programs=6,
                                                   num_threads=1, max_errors=10_000)
        program = tp.compile(dspy_arm._program("Classify."), trainset=dspy_arm._examples(train),
                             valset=dspy_arm._examples(val))
    opt = llm.summary("optimize")
    assert opt["rollouts"] == 20 and opt["refused_over_cap"] > 0  # 9 candidates x 5 items would be 45+
    assert program is not None


def test_evaluate_outputs_uses_the_strict_checkers():
    items = [_item(0), _item(1), _item(2, task="priority", expected="negative")]
    ev = evaluate_outputs(items, ["positive", "The sentiment is positive.", "negative."], [(10, 1)] * 3, 30.0)
    assert ev.successes == 2 and ev.success_rate == pytest.approx(2 / 3, abs=1e-4)
    assert ev.per_task == {"priority": 1.0, "sentiment": 0.5}
    assert ev.signatures.get("label_with_extra_text") == 1
    assert ev.avg_tokens == 11.0
    with pytest.raises(ValueError, match="items is empty"):
        evaluate_outputs([], [], [], 0)


def test_outputs_are_written(tmp_path):
    meta = {"date": "2026-11-22", "agent_type": "support-desk", "quick": True, "budgets": [60], "seed": 1,
            "task_model": "m.gguf", "provider": "llama_cpp", "splits": {"train": 1, "validation": 1, "test": 2},
            "versions": {"gepa": "0.1.4"}, "wall_s": 1.0}
    test = evaluate_outputs([_item(0), _item(1)], ["positive", "no"], [(5, 1), (5, 1)], 2.0).to_dict()
    hand = evaluate_outputs([_item(0), _item(1)], ["no", "no"], [(9, 1), (9, 1)], 2.0).to_dict()
    results = [
        ArmResult("baseline", None, "ok", test=test, wall_s={"optimize": 0.0, "test": 1.0}),
        ArmResult(compare.REFERENCE_ARM, None, "ok", test=hand, wall_s={"optimize": 0.0, "test": 1.0}),
        ArmResult("gepa", 60, "ok", test=test, optimize={"rollouts": 61, "reflection_calls": 3},
                  wall_s={"optimize": 5.0, "test": 1.0}, seed=1),
        ArmResult("gepa", 60, "ok", test=hand, optimize={"rollouts": 60}, wall_s={"optimize": 5.0, "test": 1.0},
                  seed=2),
        ArmResult("dspy-mipro", 60, "failed", error="AdapterParseError: bad", optimize={"calls": 7}),
    ]
    compare.write_json(tmp_path / "c.json", meta, results)
    compare.write_markdown(tmp_path / "c.md", meta, results)
    compare.write_plot(tmp_path / "c.png", meta, results)
    doc = json.loads((tmp_path / "c.json").read_text())
    assert [r["arm"] for r in doc["results"]] == ["baseline", compare.REFERENCE_ARM, "gepa", "gepa", "dspy-mipro"]
    base, ref = doc["results"][:2]
    assert base["test"]["ci95"][0] <= base["test"]["success_rate"] <= base["test"]["ci95"][1]
    # 1 item only the baseline solves, 0 the other way: exact McNemar p = 1.0; the reference has no p
    assert base["paired_p_vs_hand_fewshot"] == 1.0 and ref["paired_p_vs_hand_fewshot"] is None
    assert base["extra"]["paired_vs_hand_fewshot"]["discordant"] == {"only_this": 1, "only_reference": 0}
    by = {(g["arm"], g["budget"]): g for g in doc["statistics"]["by_arm"]}
    assert by[("gepa", 60)]["success_rates"] == [0.5, 0.0] and by[("gepa", 60)]["mean_success"] == 0.25
    md = (tmp_path / "c.md").read_text()
    assert "| gepa | 60 | 1 | ok | 2 | 50.0% |" in md and "## Over seeds" in md
    assert "dspy-mipro** @ 60: failed after 7 model calls" in md
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_merge_keeps_other_results_and_refuses_other_splits(tmp_path):
    meta = {"test_ids": ["it0"], "splits": {"train": 1, "validation": 1, "test": 1}}
    test = evaluate_outputs([_item(0)], ["positive"], [(5, 1)], 1.0).to_dict()
    compare.write_json(tmp_path / "compare.json", meta, [ArmResult("majority", None, "ok", test=test)])
    prev = compare.load_previous(tmp_path / "compare.json", meta)
    assert [(r.arm, r.test["successes"]) for r in prev] == [("majority", 1)]
    with pytest.raises(SystemExit, match="other splits"):
        compare.load_previous(tmp_path / "compare.json", {**meta, "test_ids": ["it9"]})
    assert compare.load_previous(tmp_path / "missing.json", meta) == []


def test_majority_and_hand_fewshot_arms_with_a_test_double():
    from benchmarks.peers import fewshot_arm

    train = [_item(1, expected="negative", split="train"), _item(2, expected="negative", split="train"),
             _item(3, expected="positive", split="train"), _item(4, task="prio", expected="low", split="train")]
    test = [_item(5, expected="negative"), _item(6, expected="positive"), _item(7, task="prio", expected="low")]
    assert fewshot_arm.majority_labels(train) == {"sentiment": "negative", "prio": "low"}
    seed = Genome(role="You classify.")
    ctx = ArmContext("support-desk", seed, train, [], test, FakeClient([]), seed=1)
    maj = fewshot_arm.run_majority(ctx)  # no model call: FakeClient has no answers to give
    assert maj.test["outcomes"] == [1, 0, 1] and maj.rollouts == 0
    g = fewshot_arm.hand_fewshot_genome(seed, train, 2)
    # k=2 per task, label-balanced (negative and positive for sentiment), tasks interleaved, stop newline
    assert [e.output for e in g.examples] == ["low", "negative", "positive"]
    assert g.params.stop == ("\n",) and g.example_format == "turns"
    hand = fewshot_arm.run_hand_fewshot(ctx_with(ctx, FakeClient(["negative", "negative", "low"])), 2)
    assert hand.arm == "hand_fewshot_k2" and hand.test["outcomes"] == [1, 0, 1]
    assert hand.extra["test_calls"]["calls"] == 3 and hand.rollouts == 0


class RecordingClient(FakeClient):
    """Test double that also keeps the messages of every request."""

    def __init__(self, answers: list[str]):
        super().__init__(answers)
        self.sent: list[list[dict[str, str]]] = []

    def chat(self, messages, params=None, *, purpose="", partition_key=None):
        self.sent.append(messages)
        return super().chat(messages, params, purpose=purpose, partition_key=partition_key)


def test_knn_fewshot_arm_sends_each_item_its_nearest_train_examples():
    from benchmarks.peers import fewshot_arm

    train = [Item("t1", "Rate the priority: the server is down", "high", "exact_label", "train", "prio", {}),
             Item("t2", "Classify the sentiment: I love it", "positive", "exact_label", "train", "sent", {}),
             Item("t3", "Rate the priority: change my email", "low", "exact_label", "train", "prio", {})]
    test = [Item("x1", "Classify the sentiment: I love the lamp", "positive", "exact_label", "test", "sent", {}),
            Item("x2", "Rate the priority: the site is down", "high", "exact_label", "test", "prio", {})]
    client = RecordingClient(["positive", "low"])
    ctx = ArmContext("support-desk", Genome(role="You classify."), train, [], test, client, seed=1)
    res = fewshot_arm.run_knn_fewshot(ctx, 1)
    assert res.arm == "knn_fewshot_k1" and res.test["outcomes"] == [1, 0] and res.rollouts == 0
    assert res.final_prompt["example_select"] == 1 and len(res.final_prompt["examples"]) == 3
    shown = [[m["content"] for m in msgs if m["role"] == "assistant"] for msgs in client.sent]
    assert shown == [["positive"], ["high"]]  # the one nearest example of each item's own task
    with pytest.raises(ValueError, match="k=0"):
        fewshot_arm.knn_fewshot_genome(Genome(role="x"), train, 0)


def ctx_with(ctx: ArmContext, client) -> ArmContext:
    from dataclasses import replace

    return replace(ctx, client=client)


@pytest.mark.slow
def test_real_arms_end_to_end_on_a_few_items(db):
    """Baseline, GEPA and DSPy LabeledFewShot with the real SmolLM2 on tiny splits, cached in PostgreSQL."""
    pytest.importorskip("gepa")
    pytest.importorskip("dspy")
    from benchmarks.peers import dspy_arm, gepa_arm

    client = LLMClient(LlamaCppProvider(), db)
    seed = Genome(role="You are a helpful customer support assistant.")
    train = [_item(10 + i, expected=e, split="train") for i, e in enumerate(["positive", "negative", "neutral"])]
    val = [_item(20, expected="negative", split="validation"), _item(21, split="validation")]
    test = [_item(30, expected="neutral"), _item(31, expected="negative")]
    ctx = ArmContext("support-desk", seed, train, val, test, client, seed=3, quick=True,
                     options={"gepa_reflection_params": {"max_tokens": 48}})  # keeps the test short

    base = baseline_arm.run(ctx)
    assert base.status == "ok" and base.test["n"] == 2 and base.rollouts == 0
    assert base.extra["test_calls"]["calls"] == 2

    g = gepa_arm.run(ctx, budget=6)
    assert g.status == "ok", g.error
    assert g.rollouts >= 2  # at least the seed's validation pass, counted through our client
    assert g.optimize["by_purpose"].get("gepa:task", 0) == g.rollouts
    assert g.test["n"] == 2 and isinstance(g.final_prompt["system_prompt"], str)

    lab = dspy_arm.run_labeled(ctx)
    assert lab.status == "ok", lab.error
    assert lab.rollouts == 0 and lab.test["n"] == 2
    assert lab.extra["test_calls"]["calls"] >= 2  # DSPy's requests went through genepool's LLMClient
    assert len(lab.final_prompt["self"]["demos"]) == 3  # k = max_examples (10) > 3 train items

    # Everything was logged in PostgreSQL; a repeat of the baseline is served from the cache.
    n = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls")["n"]
    assert n == 2 + sum(r.optimize["calls"] + r.extra["test_calls"]["calls"] for r in (g, lab))
    again = baseline_arm.run(ctx)
    assert again.extra["test_calls"]["cached"] == 2 and again.test == base.test
