import hashlib
import json
import random

import pytest

from genepool.core import operators as ops
from genepool.core.clustering import cluster_failures
from genepool.core.genome import Example, Genome, Params, render_check


class RecordedLLM:
    """Test double of LLMClient for ``reflect``: replays recorded replies keyed by the request.

    It FAILS LOUDLY on a request it has no recording for (so a change to the meta-prompt cannot pass
    silently). The real path (LLMClient + llama.cpp) is exercised end to end by the lead's e2e test.
    """

    def __init__(self, replies: dict[str, str]):
        self.replies = replies
        self.calls = []

    @staticmethod
    def key(messages) -> str:
        return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()

    def chat(self, messages, params=None, *, purpose="", partition_key=None):
        self.calls.append((messages, params, purpose, partition_key))
        k = self.key(messages)
        if k not in self.replies:
            raise AssertionError(f"RecordedLLM: no recording for this request (key {k[:12]}); record it first")

        class _C:
            text = self.replies[k]
            prompt_tokens = 10
            completion_tokens = 5
            cached = True
            cost_usd = 0.0

        return _C()


SEED = Genome(
    role="You classify customer messages.",
    instructions=("Answer with the label only, no other words.", "Be brief."),
    examples=(Example("I love it", "positive"),),
    params=Params(0.0, 48, ()),
)


def _clusters():
    failed = [
        {"trace_id": f"t{i}", "task": "sentiment", "signature": "label_with_extra_text", "success": False}
        for i in range(5)
    ] + [{"trace_id": "n1", "task": "extract", "signature": "no_number", "success": False}]
    return cluster_failures(failed, total=20)


def test_add_instruction_prefers_hints_of_the_largest_clusters():
    clusters = _clusters()
    g = SEED.with_(instructions=())
    picks = {ops.add_instruction(g, random.Random(s), ["Be polite."], clusters).instructions[0] for s in range(30)}
    assert picks == {"Answer with the label only, no other words.", "Answer with the number only, as digits."}
    # hint already present: the next cluster's hint (only one left among the hints)
    out = ops.add_instruction(SEED, random.Random(0), ["Be polite."], clusters)
    assert "Answer with the number only, as digits." in out.instructions and len(out.instructions) == 3


def test_add_instruction_falls_back_to_pool_and_is_unchanged_when_nothing_new():
    out = ops.add_instruction(SEED, random.Random(1), ["Be polite", "be brief"], [])
    assert out.instructions.count("Be polite.") == 1 and len(out.instructions) == 3
    assert ops.add_instruction(SEED, random.Random(1), ["Be brief."], []) is SEED


def test_remove_and_drop_are_deterministic_and_reduce():
    a = ops.remove_instruction(SEED, random.Random(3))
    b = ops.remove_instruction(SEED, random.Random(3))
    assert a == b and len(a.instructions) == 1 and set(a.instructions) < set(SEED.instructions)
    assert ops.drop_example(SEED, random.Random(0)).examples == ()
    assert ops.remove_instruction(SEED.with_(instructions=()), random.Random(0)).instructions == ()


def test_rephrase_uses_the_rule_table():
    assert "Reply with only the label, no other words." in ops.rephrase_options(
        "Answer with the label only, no other words."
    )
    assert ops.rephrase_options("Reply with only the number.")[0] == "Answer with the number."
    assert "Never explain." in ops.rephrase_options("Do not explain.")
    assert "Be brief. Do not explain." in ops.rephrase_options("Be brief")
    g = ops.rephrase_instruction(SEED, random.Random(5))
    assert g != SEED and len(g.instructions) == 2
    changed = [(a, b) for a, b in zip(SEED.instructions, g.instructions, strict=False) if a != b]
    assert len(changed) == 1 and changed[0][1] in ops.rephrase_options(changed[0][0])
    assert ops.rephrase_instruction(SEED, random.Random(5)) == g


def test_mine_examples_covers_failing_tasks_prefers_successes_and_skips_duplicates_and_heldout():
    successes = [
        {"task": "extract", "input": "Order 12 please", "output": "12", "success": True},
        {"task": "sentiment", "input": "I love it", "output": "positive", "success": True},  # already in genome
        {"task": "extract", "input": "val item", "output": "3", "success": True, "split": "validation"},
    ]
    labelled = [
        {"task": "sentiment", "input": "Awful service", "expected": "negative", "split": "train"},
        {"task": "sentiment", "input": "Secret test item", "expected": "neutral", "split": "test"},
        {"task": "json", "input": "Name: Ann", "expected": {"name": "Ann"}, "split": "train"},
        {"task": "json", "input": "HELDOUT", "expected": {"name": "X"}, "split": "train"},
    ]
    clusters = _clusters()  # sentiment fails most, then extract
    g = ops.mine_examples(SEED, random.Random(0), successes, labelled, k=3, clusters=clusters,
                          forbidden_inputs={"heldout"})
    added = g.examples[len(SEED.examples):]
    assert [e.input for e in added] == ["Awful service", "Order 12 please", "Name: Ann"]
    assert added[2].output == '{"name": "Ann"}'
    # cap on the total number of examples
    capped = ops.mine_examples(SEED, random.Random(0), successes, labelled, k=3, clusters=clusters, max_examples=2)
    assert len(capped.examples) == 2
    assert ops.mine_examples(capped, random.Random(0), successes, labelled, k=3, max_examples=2) is capped
    with pytest.raises(ValueError, match="k=0"):
        ops.mine_examples(SEED, random.Random(0), successes, labelled, k=0)


def test_mutate_params_changes_exactly_one_field_to_an_allowed_value():
    for s in range(40):
        g = ops.mutate_params(SEED, random.Random(s))
        diffs = [
            g.params.temperature != SEED.params.temperature,
            g.params.max_tokens != SEED.params.max_tokens,
            g.params.stop != SEED.params.stop,
            g.example_format != SEED.example_format,
        ]
        assert sum(diffs) == 1
        assert g.params.temperature in ops.TEMPERATURES and g.params.max_tokens in ops.MAX_TOKENS
        assert g.params.stop in ops.STOPS and g.example_format in ops.EXAMPLE_FORMATS


def test_crossover_keeps_shared_genes_order_and_partitions_the_rest():
    g1 = Genome("Role A.", ("Rule one.", "Shared rule.", "Rule two."), (Example("a", "1"),), Params(0.0, 8, ("\n",)))
    g2 = Genome("Role B.", ("Shared rule.", "Rule three."), (Example("b", "2"), Example("a", "1")),
                Params(0.5, 96, ()), "inline")
    c1, c2 = ops.crossover(g1, g2, random.Random(7))
    assert ops.crossover(g1, g2, random.Random(7)) == (c1, c2)
    for c in (c1, c2):
        assert "Shared rule." in c.instructions and Example("a", "1") in c.examples
        assert len(set(c.instructions)) == len(c.instructions)
        order = ["Rule one.", "Shared rule.", "Rule two.", "Rule three."]
        assert [i for i in order if i in c.instructions] == list(c.instructions)  # stable order
    only = {"Rule one.", "Rule two.", "Rule three."}
    assert (set(c1.instructions) | set(c2.instructions)) >= only
    assert not (set(c1.instructions) & set(c2.instructions) & only)  # each non-shared gene goes to one child
    for name in ("temperature", "max_tokens", "stop"):
        children = {getattr(c1.params, name), getattr(c2.params, name)}
        assert children == {getattr(g1.params, name), getattr(g2.params, name)}
    assert {c1.role, c2.role} == {"Role A.", "Role B."}
    seen = {ops.crossover(g1, g2, random.Random(s))[0].canonical_json() for s in range(20)}
    assert len(seen) > 3  # the rng matters


def test_reflect_parses_recorded_reply_into_genomes():
    clusters = _clusters()
    msgs = ops.reflect_messages(SEED, clusters, 2)
    assert "right label but extra text" in msgs[-1]["content"] and "Write 2 improved rule lists" in msgs[-1]["content"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]  # worked example first
    assert "PROMPT 2:" in msgs[2]["content"]
    reply = (
        "Here are the improved prompts.\n\nPROMPT 1:\n- Answer with one word: the label.\n- Do not explain.\n\n"
        "**Prompt 2:**\n1. Reply with only the label.\n2. ###\n"
    )
    llm = RecordedLLM({RecordedLLM.key(msgs): reply})
    notes = []
    out = ops.reflect(SEED, random.Random(0), clusters, llm, 2, partition_key="support-desk/g0001", notes=notes)
    assert sorted(g.instructions for g in out) == [
        ("Answer with one word: the label.", "Do not explain."),
        ("Reply with only the label.",),
    ]
    assert all(g.role == SEED.role and g.examples == SEED.examples for g in out)
    assert all(render_check(g) for g in out)
    assert any("dropped 1 line" in n for n in notes)
    _, params, purpose, pk = llm.calls[0]
    assert purpose == "reflect" and pk == "support-desk/g0001" and params["temperature"] == 0.0


def test_reflect_on_a_useless_reply_returns_nothing_and_records_why():
    clusters = _clusters()
    msgs = ops.reflect_messages(SEED, clusters, 2)
    llm = RecordedLLM({RecordedLLM.key(msgs): "I'm ready to help."})
    notes = []
    assert ops.reflect(SEED, random.Random(0), clusters, llm, 2, notes=notes) == []
    assert any("unusable reply" in n for n in notes)


def test_recorded_llm_fails_loudly_on_an_unseen_prompt():
    llm = RecordedLLM({})
    with pytest.raises(AssertionError, match="no recording"):
        llm.chat([{"role": "user", "content": "new"}])
    # reflect turns a failing model call into [] with a note (breeding goes on)
    notes = []
    assert ops.reflect(SEED, random.Random(0), _clusters(), llm, 2, notes=notes) == []
    assert "no recording" in notes[0]


def test_parse_reflection_accepts_json_and_headerless_lists():
    lists, _ = ops.parse_reflection('[["Answer in one word", "Never explain"], ["Use digits only"]]', 5)
    assert lists == [["Answer in one word.", "Never explain."], ["Use digits only."]]
    lists, _problems = ops.parse_reflection("- Answer with the label.\n- Keep it short.", 2)
    assert lists == [["Answer with the label.", "Keep it short."]]
    lists, _ = ops.parse_reflection("PROMPT 1:\n- first rule\n- second rule\nPROMPT 2:\n- Be short now.", 2)
    assert lists == [["Be short now."]]  # the template's placeholders are not rules


def test_reflect_template_is_strict():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        ops.reflect_template().render(role="r", instructions=[], n=1)  # clusters missing
