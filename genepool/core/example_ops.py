"""Example-set search: the few-shot examples of a genome as a first-class search space.

For a small model the *choice* of examples (which task, which label, how many, in what order) and the
decoding settings matter far more than the wording of the rules, so these operators move through that
space one step at a time:

- ``add_example``: add one example for a task chosen by its share of the failure clusters (a task that
  fails more is drawn more often), with the label least shown for that task (label-balanced);
- ``swap_example``: replace one example by another of the same task, preferring a label the genome
  shows least for that task;
- ``drop_example_redundant``: drop one example of the task (and label) the genome shows most;
- ``reorder_example``: move one example to another position;
- ``fewshot_init``: a whole label-balanced set of ``k`` examples per task (tasks interleaved) with one-line
  answers (stop ``"\\n"``): the starting point a practitioner would write by hand, drawn at random from
  the pool so that siblings differ; used when a parent shows fewer examples than the agent has tasks;
- ``knn_init``: a label-balanced *pool* of up to ``max_pool`` labelled examples (every task) shown as the
  ``k`` nearest the input per request (``Genome.example_select``): dynamic few-shot, the structure that
  lifts a small model most when the train split is large (support-desk's held-out test in
  ``benchmarks/results/support-desk/compare.json``: 44.7% with two fixed examples per task, 67.1% and
  72.9% with the two and four nearest of the train split), and hurts it on critic (34.4% and 40.6%);
- ``tune_select``: change ``k``, or turn a fixed set into a nearest-``k`` pool and back;
- ``tune_decoding``: set the stop sequence to ``"\\n"`` (one-line answers) or shrink ``max_tokens`` to
  the smallest allowed value that still fits the longest example answer (fewer wasted tokens).

Candidate examples come from an ``ExamplePool`` built from labelled TRAIN items (``expected``) and
*bootstrapped* examples: the model's own correct outputs on train items (successful traces), which show
the model an answer in its own words next to the labelled ones. Held-out inputs are never used.
Every operator is a pure function of its inputs and ``rng``; one that cannot apply returns the genome
unchanged (the breeder then draws again).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genepool.core.clustering import FailureCluster
from genepool.core.genome import Example, Genome, Params, normalize_text
from genepool.core.types import field_of

MAX_TOKENS_CHOICES = (8, 16, 32, 48, 96)
SELECT_CHOICES = (1, 2, 3, 4, 6)  # nearest examples shown per request by a pool genome
NEWLINE_STOP: tuple[str, ...] = ("\n",)


def _as_output(value: Any) -> str:
    import json

    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass(frozen=True)
class PoolExample:
    task: str
    example: Example
    source: str  # "labelled" | "bootstrapped"

    @property
    def label(self) -> str:
        return normalize_text(self.example.output)


class ExamplePool:
    """Candidate examples per task, deterministic order (task, source, input)."""

    def __init__(
        self,
        labelled: Sequence[Any] = (),
        successes: Sequence[Any] = (),
        forbidden_inputs: frozenset[str] | set[str] = frozenset(),
    ):
        banned = {normalize_text(x) for x in forbidden_inputs}
        seen: set[tuple[str, str]] = set()
        entries: list[PoolExample] = []

        def take(rows: Sequence[Any], output_field: str, source: str) -> None:
            for r in rows:
                if field_of(r, "split") not in (None, "train"):
                    continue
                if source == "bootstrapped" and field_of(r, "success") is not True:
                    continue
                inp, out = field_of(r, "input"), field_of(r, output_field)
                if inp is None or out is None or not str(inp).strip() or not _as_output(out):
                    continue
                if normalize_text(inp) in banned:
                    continue
                key = (normalize_text(inp), source)
                if key in seen:
                    continue
                seen.add(key)
                entries.append(PoolExample(str(field_of(r, "task") or "task"), Example(str(inp), _as_output(out)),
                                           source))

        take(labelled, "expected", "labelled")
        take(successes, "output", "bootstrapped")
        entries.sort(key=lambda e: (e.task, e.source, e.example.input))
        self.entries = entries
        self.task_of_input = {normalize_text(e.example.input): e.task for e in entries}

    def __len__(self) -> int:
        return len(self.entries)

    def tasks(self) -> list[str]:
        return sorted({e.task for e in self.entries})

    def for_task(self, task: str, exclude_inputs: set[str]) -> list[PoolExample]:
        return [e for e in self.entries if e.task == task and normalize_text(e.example.input) not in exclude_inputs]

    def task_of(self, ex: Example) -> str | None:
        return self.task_of_input.get(normalize_text(ex.input))


def _failure_weights(clusters: Sequence[FailureCluster], tasks: Sequence[str]) -> list[float]:
    """Weight per task: 1 + failures in the clusters naming it (every task stays reachable)."""
    fails: Counter = Counter()
    for c in clusters:
        for t in c.tasks:
            fails[t] += c.count
    return [1.0 + fails[t] for t in tasks]


def _balanced_pick(candidates: list[PoolExample], shown: Counter, rng: random.Random) -> PoolExample:
    """Among the candidates whose label is least shown, draw one (rng)."""
    least = min(shown[c.label] for c in candidates)
    best = [c for c in candidates if shown[c.label] == least]
    return best[rng.randrange(len(best))]


def _labels_shown(g: Genome, pool: ExamplePool, task: str) -> Counter:
    return Counter(normalize_text(e.output) for e in g.examples if pool.task_of(e) == task)


def add_example(
    g: Genome,
    rng: random.Random,
    pool: ExamplePool,
    clusters: Sequence[FailureCluster] = (),
    max_examples: int = 8,
) -> Genome:
    """Add one label-balanced example for a task drawn by its share of the failures."""
    if len(g.examples) >= max_examples or not len(pool):
        return g
    used = {normalize_text(e.input) for e in g.examples}
    tasks = [t for t in pool.tasks() if pool.for_task(t, used)]
    if not tasks:
        return g
    task = rng.choices(tasks, weights=_failure_weights(clusters, tasks))[0]
    pick = _balanced_pick(pool.for_task(task, used), _labels_shown(g, pool, task), rng)
    examples = list(g.examples)
    examples.insert(rng.randint(0, len(examples)), pick.example)
    return g.with_(examples=tuple(examples))


def swap_example(g: Genome, rng: random.Random, pool: ExamplePool) -> Genome:
    """Replace one example by another of the same task, preferring a label the genome shows least."""
    if not g.examples or not len(pool):
        return g
    used = {normalize_text(e.input) for e in g.examples}
    slots = [i for i, e in enumerate(g.examples) if pool.task_of(e) and pool.for_task(pool.task_of(e), used)]
    if not slots:
        return g
    i = slots[rng.randrange(len(slots))]
    task = pool.task_of(g.examples[i])
    shown = _labels_shown(g, pool, task)
    shown[normalize_text(g.examples[i].output)] -= 1  # the one leaving does not count
    pick = _balanced_pick(pool.for_task(task, used), shown, rng)
    examples = list(g.examples)
    examples[i] = pick.example
    return g.with_(examples=tuple(examples))


def drop_example_redundant(g: Genome, rng: random.Random, pool: ExamplePool) -> Genome:
    """Drop one example of the most-shown (task, label); a task keeps at least one example."""
    if not g.examples:
        return g
    keys = [(pool.task_of(e) or "?", normalize_text(e.output)) for e in g.examples]
    per_task = Counter(t for t, _ in keys)
    per_key = Counter(keys)
    droppable = [i for i, (t, _) in enumerate(keys) if per_task[t] > 1 or t == "?"]
    if not droppable:
        return g
    top = max(per_key[keys[i]] for i in droppable)
    best = [i for i in droppable if per_key[keys[i]] == top]
    i = best[rng.randrange(len(best))]
    return g.with_(examples=g.examples[:i] + g.examples[i + 1 :])


def reorder_example(g: Genome, rng: random.Random) -> Genome:
    """Move one example to a different position (not in a nearest-example pool, where the order only breaks ties)."""
    if len(g.examples) < 2 or g.example_select:
        return g
    i = rng.randrange(len(g.examples))
    examples = list(g.examples)
    ex = examples.pop(i)
    j = rng.choice([k for k in range(len(g.examples)) if k != i])
    examples.insert(j, ex)
    return g.with_(examples=tuple(examples))


def answer_token_estimate(text: str) -> int:
    """A conservative token count for an answer (about 3 characters per token, at least 1)."""
    return max(1, -(-len(text) // 3))


def tune_decoding(g: Genome, rng: random.Random) -> Genome:
    """Stop at the first newline, or shrink ``max_tokens`` to fit the longest example answer.

    With no examples there is nothing to size ``max_tokens`` by, so only the stop sequence is set.
    """
    p = g.params
    options = []
    if p.stop != NEWLINE_STOP:
        options.append("stop")
    if g.examples:
        need = max(answer_token_estimate(e.output) for e in g.examples) + 2
        fit = next((m for m in MAX_TOKENS_CHOICES if m >= need), MAX_TOKENS_CHOICES[-1])
        if fit != p.max_tokens:
            options.append(("max_tokens", fit))
    if not options:
        return g
    choice = options[rng.randrange(len(options))]
    if choice == "stop":
        return g.with_(params=Params(p.temperature, p.max_tokens, NEWLINE_STOP))
    return g.with_(params=Params(p.temperature, choice[1], p.stop))


def fewshot_init(g: Genome, rng: random.Random, pool: ExamplePool, per_task: int = 2,
                 max_examples: int = 10) -> Genome:
    """Replace the examples by ``per_task`` label-balanced examples per task, tasks interleaved, and stop
    answers at the first newline; ``per_task`` shrinks until the set fits ``max_examples``.

    Labelled examples are preferred over bootstrapped ones (their labels are known right); within a label,
    the draw is random (``rng``), so each call explores another example set of the same shape.
    """
    tasks = pool.tasks()
    if not tasks or max_examples < 1:
        return g
    per_task = max(1, min(per_task, max_examples // len(tasks) or 1))
    chosen: dict[str, list[PoolExample]] = {t: [] for t in tasks}
    for _ in range(per_task):
        for task in tasks:
            used = {normalize_text(e.example.input) for e in chosen[task]}
            cands = pool.for_task(task, used)
            labelled = [c for c in cands if c.source == "labelled"]
            cands = labelled or cands
            if not cands:
                continue
            shown = Counter(c.label for c in chosen[task])
            chosen[task].append(_balanced_pick(cands, shown, rng))
    examples: list[Example] = []
    for round_ in range(per_task):
        order = list(tasks)
        rng.shuffle(order)
        for task in order:
            if round_ < len(chosen[task]) and len(examples) < max_examples:
                examples.append(chosen[task][round_].example)
    if not examples:
        return g
    p = g.params
    return g.with_(examples=tuple(examples), example_format="turns",
                   params=Params(p.temperature, p.max_tokens, NEWLINE_STOP))


def knn_init(g: Genome, rng: random.Random, pool: ExamplePool, k: int = 2, max_pool: int = 96) -> Genome:
    """Replace the examples by a pool of up to ``max_pool`` labelled examples, label-balanced per task (random
    draws when a task has more), shown as the ``k`` nearest the input per request, answers stopped at the
    first newline. Bootstrapped examples are used only for a task with no labelled one."""
    tasks = pool.tasks()
    if not tasks or max_pool < 1 or k < 1:
        return g
    per_task = max(1, max_pool // len(tasks))
    twin = fewshot_init(g, rng, pool, per_task=per_task, max_examples=max(max_pool, len(tasks)))
    if twin is g:
        return g
    return twin.with_(example_select=min(k, len(twin.examples)))


def tune_select(g: Genome, rng: random.Random, max_examples: int = 10) -> Genome:
    """Show another number of nearest examples per request; a fixed set (if it has more than one example) may
    become a nearest-``k`` pool, and a pool of at most ``max_examples`` a fixed set again (k = 0)."""
    if len(g.examples) < 2 or g.example_format != "turns":
        return g
    options = [k for k in SELECT_CHOICES if k != g.example_select and k < len(g.examples)]
    if g.example_select and len(g.examples) <= max_examples:
        options.append(0)
    if not options:
        return g
    return g.with_(example_select=options[rng.randrange(len(options))])
