"""Strict accuracy of prompt structures on an agent's validation split, with the real local model.

    .venv/bin/python benchmarks/measure_baseline.py [support-desk|critic] [--split validation] [--shots 2]

Configurations: (a) the seed genome; (b) seed + format rules from the instruction pool; (c) seed +
few-shot examples from the train split as chat turns; (d) (c) + stop=["\\n"] and small max_tokens;
(e) (b) + (d). Prints overall and per-task accuracy and the top failure signatures.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict

from genepool.agents import get_agent, load_agent_benchmark
from genepool.core.benchmark import split_items
from genepool.core.checkers import check
from genepool.core.genome import Example, Params
from genepool.llm import LlamaCppProvider, LLMClient

RULES = {
    "support-desk": (
        "Answer with exactly one word from the list given in the question.",
        "When asked for an order number, reply with the digits only, without '#'.",
        "Output only a JSON object, no other text.",
        "Do not explain your answer.",
    ),
    "critic": ("Answer with exactly one word: correct or incorrect.", "Do not explain your verdict."),
}


def few_shot(train, shots: int) -> tuple[Example, ...]:
    by_task = defaultdict(list)
    for it in train:
        by_task[it.task].append(it)
    out = []
    for k in range(shots):  # interleave tasks so no task sits only at the far end of the context
        for task in sorted(by_task):
            # pick items with different expected labels where possible
            seen = {e.output for e in out}
            pool = [it for it in by_task[task] if it.expected not in seen] or by_task[task]
            pick = pool[k % len(pool)]
            by_task[task].remove(pick)
            out.append(Example(pick.input, pick.expected))
    return tuple(out)


def run(client, genome, items):
    per_task = defaultdict(lambda: [0, 0])
    sigs = Counter()
    toks = 0
    for it in items:
        comp = client.chat(genome.messages(it.input), {
            "temperature": genome.params.temperature,
            "max_tokens": genome.params.max_tokens,
            "stop": list(genome.params.stop),
        })
        res = check(it, comp.text)
        per_task[it.task][0] += res.success
        per_task[it.task][1] += 1
        sigs[res.signature.split(":")[0]] += 1
        toks += comp.prompt_tokens
    ok = sum(v[0] for v in per_task.values())
    return ok / len(items), {t: v[0] / v[1] for t, v in sorted(per_task.items())}, sigs, toks / len(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("agent", nargs="?", default="support-desk")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--only", default="abcde")
    a = ap.parse_args()
    spec = get_agent(a.agent)
    items = load_agent_benchmark(a.agent)
    evals = split_items(items, a.split)
    shots = few_shot(split_items(items, "train"), a.shots)
    seed = spec.seed_genome
    rules = seed.with_(instructions=RULES[a.agent])
    fs = seed.with_(examples=shots)
    small = Params(temperature=0.0, max_tokens=32, stop=("\n",))
    configs = {
        "a": ("seed", seed),
        "b": ("seed + rules", rules),
        "c": (f"few-shot turns ({len(shots)})", fs),
        "d": ("few-shot + stop \\n, max_tokens 32", fs.with_(params=small)),
        "e": ("rules + few-shot + stop", rules.with_(examples=shots, params=small)),
    }
    client = LLMClient(LlamaCppProvider(), db=None)
    for key, (name, genome) in configs.items():
        if key not in a.only:
            continue
        t0 = time.perf_counter()
        acc, per_task, sigs, ptoks = run(client, genome, evals)
        dt = time.perf_counter() - t0
        tasks = " ".join(f"{t}={v:.0%}" for t, v in per_task.items())
        print(f"({key}) {name:38s} {acc:6.1%}  [{tasks}]  prompt_tok/item={ptoks:.0f} {dt:.0f}s")
        print(f"      failures: {dict(sigs.most_common(6))}", flush=True)


if __name__ == "__main__":
    main()
