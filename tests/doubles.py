"""TEST DOUBLES of task models for the generation tests (tests/test_pipeline.py, tests/test_generation_guards.py,
the kill/resume child tests/generation_child.py): deterministic, instant providers that are not models at all."""

from __future__ import annotations

from genepool.agents import load_agent_benchmark
from genepool.llm import LLMError, RawCompletion

ALL_ITEMS = {it.input: it for agent in ("support-desk", "critic") for it in load_agent_benchmark(agent)}


class RuleFollowingFakeModel:
    """TEST DOUBLE of a task model (not a model at all): deterministic, instant, no randomness.

    It knows every benchmark item's expected answer and task (looked up by the exact user input).
    It answers an item strictly correctly only when the request carries at least one few-shot
    *user/assistant turn* whose user input is another item of the same task; otherwise it wraps the
    right answer in prose ("I think the answer is: X, hope that helps!"), which the strict checkers
    count as a format failure. ``native_tasks`` are answered correctly even without turns.
    This mirrors what was measured on SmolLM2 (few-shot turns matter, wording does not), so the
    optimiser has a real signal to find. Token counts are len(text) // 4 (+1), latency is a fixed
    function of the tokens, so a re-run gives byte-identical numbers.
    """

    name = "fake_rule_following"
    model = "rule-following-fake-v1"

    def __init__(self, native_tasks: tuple[str, ...] = ()):
        self.native_tasks = set(native_tasks)
        self.calls = 0
        self.systems: list[str] = []  # every system message seen, to prove what was (not) run

    # -- helpers a subclass may change --
    def turn_tasks(self, messages: list[dict]) -> set[str]:
        tasks = set()
        for m in messages[1:-1]:
            if m["role"] == "user" and m["content"] in ALL_ITEMS:
                tasks.add(ALL_ITEMS[m["content"]].task)
        return tasks

    def correct(self, messages: list[dict], task: str) -> bool:
        return task in self.native_tasks or task in self.turn_tasks(messages)

    def tokens(self, messages: list[dict], text: str) -> tuple[int, int]:
        return sum(len(m["content"]) for m in messages) // 4 + 1, len(text) // 4 + 1

    def complete(self, messages, params) -> RawCompletion:
        self.calls += 1
        self.systems.append(messages[0]["content"])
        item = ALL_ITEMS.get(messages[-1]["content"])
        if item is None:
            text = "I am not sure what you mean."
        elif self.correct(messages, item.task):
            text = item.expected
        else:
            text = f"I think the answer is: {item.expected}, hope that helps!"
        p, c = self.tokens(messages, text)
        return RawCompletion(text=text, prompt_tokens=p, completion_tokens=c, latency_ms=round(5.0 + 0.01 * (p + c), 3))


class ControlBreakingFakeModel(RuleFollowingFakeModel):
    """TEST DOUBLE: like RuleFollowingFakeModel with ``sentiment`` answered natively (so production
    passes the sentiment items, which become the controls), except that ANY few-shot turn in the
    request makes it botch sentiment. A child that mines examples therefore wins its target items and
    regresses on the controls production passed."""

    name = "fake_control_breaking"
    model = "control-breaking-fake-v1"

    def __init__(self):
        super().__init__(native_tasks=("sentiment",))

    def correct(self, messages, task):
        has_turns = len(messages) > 2
        if task == "sentiment":
            return not has_turns
        return task in self.turn_tasks(messages)


class FailingAfterFakeModel(RuleFollowingFakeModel):
    """TEST DOUBLE: a RuleFollowingFakeModel whose (n+1)-th uncached call raises LLMError, as a provider
    that goes down mid-generation would."""

    name = RuleFollowingFakeModel.name  # same provider/model name: the same cache keys as a clean run
    model = RuleFollowingFakeModel.model

    def __init__(self, fail_after: int):
        super().__init__()
        self.fail_after = fail_after

    def complete(self, messages, params):
        if self.calls >= self.fail_after:
            raise LLMError(f"fake provider down after {self.fail_after} calls (connection refused)")
        return super().complete(messages, params)


class NegativeTokensFakeModel(RuleFollowingFakeModel):
    """TEST DOUBLE of a buggy provider: reports negative prompt token counts for ``priority`` items."""

    name = "fake_negative_tokens"
    model = "negative-tokens-fake-v1"

    def tokens(self, messages, text):
        p, c = super().tokens(messages, text)
        item = ALL_ITEMS.get(messages[-1]["content"])
        return (-p if item is not None and item.task == "priority" else p), c
