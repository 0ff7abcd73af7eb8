"""The two controls every optimiser must clear (no rollouts):

- ``majority``: for each task, the most frequent expected answer in the TRAIN split, answered for every
  test item of that task with no model call (ties: the alphabetically first label). The floor any
  classification prompt must clear; on tasks whose answers are unique (order numbers, JSON) it scores 0.
- ``hand_fewshot_k{k}``: what a practitioner writes in five minutes: the agent's seed prompt plus ``k``
  labelled train examples per task as user/assistant chat turns, decoding ``stop=["\\n"]``. Examples are
  label-balanced (a label not yet shown for the task first) and, within a label, the shortest input;
  tasks are interleaved so none sits only at the far end of the context. Deterministic.
- ``knn_fewshot_k{k}``: dynamic few-shot as a practitioner sets it up with a library (DSPy's KNNFewShot,
  LangChain's similarity example selector): every labelled train example in a pool, each request showing
  the ``k`` nearest its input as chat turns, stop ``"\n"``; the similarity is the word overlap genepool's
  pool genomes use (``Genome.example_select``), so the arm differs from genepool only by not searching.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from benchmarks.peers.common import ArmContext, ArmResult, Stopwatch, evaluate_genome, evaluate_outputs
from genepool.core.benchmark import Item
from genepool.core.genome import Example, Genome, Params
from genepool.validation import MAX_EXAMPLES

HAND_STOP = ("\n",)


def majority_labels(train: Sequence[Item]) -> dict[str, str]:
    """Most frequent expected answer per task in ``train`` (ties broken alphabetically)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for it in train:
        counts[it.task][str(it.expected)] += 1
    return {task: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for task, c in counts.items()}


def hand_examples(train: Sequence[Item], k: int) -> tuple[Example, ...]:
    """``k`` examples per task: label-balanced, shortest inputs first, tasks interleaved."""
    if k < 1:
        raise ValueError(f"k={k}: a few-shot prompt needs at least 1 example per task")
    by_task: dict[str, list[Item]] = defaultdict(list)
    for it in sorted(train, key=lambda i: (len(i.input), i.id)):
        by_task[it.task].append(it)
    chosen: dict[str, list[Item]] = {t: [] for t in by_task}
    for _ in range(k):
        for task in sorted(by_task):
            shown = Counter(str(it.expected) for it in chosen[task])
            pool = by_task[task]
            if not pool:
                continue
            # the shortest item among the least-shown labels
            pick = min(pool, key=lambda it: (shown[str(it.expected)], len(it.input), it.id))
            pool.remove(pick)
            chosen[task].append(pick)
    out = []
    for round_ in range(k):
        for task in sorted(chosen):
            if round_ < len(chosen[task]):
                it = chosen[task][round_]
                out.append(Example(it.input, str(it.expected)))
    return tuple(out)


def hand_fewshot_genome(seed: Genome, train: Sequence[Item], k: int) -> Genome:
    p = seed.params
    return seed.with_(
        examples=hand_examples(train, k),
        example_format="turns",
        params=Params(temperature=0.0, max_tokens=p.max_tokens, stop=HAND_STOP),
    )


def knn_fewshot_genome(seed: Genome, train: Sequence[Item], k: int) -> Genome:
    """Every labelled train example (in id order, at most the genome's limit) as a pool of the ``k`` nearest."""
    if k < 1:
        raise ValueError(f"k={k}: a nearest-example prompt shows at least 1 example")
    pool = tuple(Example(it.input, str(it.expected)) for it in sorted(train, key=lambda i: i.id))[:MAX_EXAMPLES]
    return seed.with_(examples=pool, example_format="turns", example_select=k,
                      params=Params(temperature=0.0, max_tokens=seed.params.max_tokens, stop=HAND_STOP))


def run_majority(ctx: ArmContext) -> ArmResult:
    sw = Stopwatch()
    labels = majority_labels(ctx.train)
    with sw.lap("test"):
        outputs = [labels.get(it.task, "") for it in ctx.test]
        test = evaluate_outputs(ctx.test, outputs, [(0, 0)] * len(ctx.test), 0.0)
    return ArmResult(
        arm="majority", budget=None, status="ok", test=test.to_dict(), optimize={"rollouts": 0, "calls": 0},
        wall_s={"optimize": 0.0, **sw.laps}, final_prompt={"answers_per_task": labels},
    )


def run_fixed_prompt(ctx: ArmContext, arm: str, genome: Genome, **extra: object) -> ArmResult:
    """An arm that optimises nothing: ``genome`` scored on the test split (zero rollouts)."""
    llm = ctx.metered()
    sw = Stopwatch()
    with sw.lap("test"):
        test = evaluate_genome(llm, ctx.test, genome, purpose=f"bench:{arm}:test")
    return ArmResult(
        arm=arm, budget=None, status="ok", test=test.to_dict(), optimize=llm.summary("optimize"),
        wall_s={"optimize": 0.0, **sw.laps}, final_prompt=genome.to_dict(),
        extra={"examples": len(genome.examples), **extra, "test_calls": llm.summary("test")},
    )


def run_hand_fewshot(ctx: ArmContext, k: int) -> ArmResult:
    return run_fixed_prompt(ctx, f"hand_fewshot_k{k}", hand_fewshot_genome(ctx.seed_genome, ctx.train, k))


def run_knn_fewshot(ctx: ArmContext, k: int) -> ArmResult:
    return run_fixed_prompt(ctx, f"knn_fewshot_k{k}", knn_fewshot_genome(ctx.seed_genome, ctx.train, k),
                            shown_per_request=k)
