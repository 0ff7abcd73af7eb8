"""How much room this model and these suites leave for a prompt optimiser (the evidence behind issue 11's goal).

    python -m benchmarks.headroom        # -> benchmarks/results/headroom.json

Reads the committed ``benchmarks/results/<agent>/compare.json`` files and makes 1,651 model calls (the same
local model, greedy, through the cached ``LLMClient``: a re-run costs no calls). Four measurements:

1. ``goal``: per suite, the best arm other than genepool (highest test success) and the fewest test successes a
   prompt needs to be "+5 points and significant at 5%" against it (exact McNemar), when it loses no item the
   best arm solves and when it loses 2 or 4 of them. Pure arithmetic on the committed outcomes.
2. ``critic_knowledge``: every critic item asks whether a proposed answer to a question is right. The model is
   asked each question itself (one train question per domain, with its right answer, as chat turns; stop at a
   newline) and the last word of its answer compared with the right one; the verdicts of every committed critic
   arm are then split by whether the model knows the answer. It separates "does not know" from "cannot compare".
3. ``support_desk_copy``: for the best support-desk arm's nearest-example prompt, the label tasks' test items
   whose nearest shown example (the last turn before the question) already carries the expected label, and how
   many of them the prompt still gets wrong. No model call: the committed outcomes and the prompt's own
   (pure) example selection.
4. ``support_desk_structures``: nearest-example prompts over the whole train split with other ``k``, with
   label-diverse neighbours (the nearest example of each label first) and with the nearest example first
   instead of last, scored on validation and test like the ``knn_fewshot`` arms.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.stats import discordant, mcnemar_exact_p

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OUT = RESULTS_DIR / "headroom.json"
LEAD = 0.05
ALPHA = 0.05
LOSSES = (0, 2, 4)
STRUCTURES = ("nearest:1", "nearest:2", "nearest:3", "nearest:4", "nearest:6", "nearest:8", "nearest:12",
              "diverse:2", "diverse:4", "diverse:6", "nearest_first:4")
_QUESTION = re.compile(r"Question: (?P<q>.+?) Proposed answer: (?P<a>.+)$")
_ARITH = re.compile(r"^What is (\d+) ([+\-x]) (\d+)\?$")
_CAPITAL = re.compile(r"^What is the capital of (.+)\?$")
_OPPOSITE = re.compile(r"^What is the opposite of (.+)\?$")
_TOKEN = re.compile(r"[\w.]+")


# ----- 1. the goal's arithmetic ---------------------------------------------------------------------------------
def needed_successes(best: int, n: int, losses: int = 0, lead: float = LEAD, alpha: float = ALPHA) -> int | None:
    """The fewest successes out of ``n`` that beat ``best`` by ``lead`` with an exact McNemar p < ``alpha``, for
    a prompt that fails ``losses`` of the items the best arm solves; None when no score out of ``n`` does."""
    if not 0 <= best <= n or losses < 0:
        raise ValueError(f"needed_successes: best={best}, n={n}, losses={losses}")
    for x in range(n + 1):
        wins = x - best + losses  # items only the new prompt solves
        if wins < 0 or wins > n - best:
            continue
        if x / n >= best / n + lead - 1e-12 and mcnemar_exact_p(wins, losses) < alpha:
            return x
    return None


def goal_rows(results: Sequence[dict[str, Any]], agent: str) -> dict[str, Any]:
    """The goal's bar on one suite: the best non-genepool arm and the successes needed to clear it."""
    others = [r for r in results if r.get("arm") != "genepool" and r.get("status") == "ok" and r.get("test")]
    best = max(others, key=lambda r: (r["test"]["success_rate"], -r["test"].get("avg_tokens", 0)))
    n, s = best["test"]["n"], best["test"]["successes"]
    need = {str(k): needed_successes(s, n, k) for k in LOSSES}
    genepool = []
    for r in results:
        if r.get("arm") == "genepool" and r.get("status") == "ok":
            only_g, only_best = discordant(r["test"]["outcomes"], best["test"]["outcomes"])
            genepool.append({"budget": r.get("budget"), "seed": r.get("seed"),
                             "successes": r["test"]["successes"], "items_only_genepool_solves": only_g,
                             "items_only_best_solves": only_best})
    return {
        "agent_type": agent, "n": n, "best_other_arm": best["arm"], "best_successes": s,
        "best_success_rate": round(s / n, 4),
        "needed_successes_by_losses": need,
        "needed_success_rate_by_losses": {k: (None if v is None else round(v / n, 4)) for k, v in need.items()},
        "genepool_runs": genepool,
    }


# ----- 2. critic: does the model know the answer? ----------------------------------------------------------------
def right_answer(question: str) -> str:
    """The right answer to a critic question (from ``genepool.agents.critic``'s own tables)."""
    from genepool.agents.critic import CAPITALS, OPPOSITES, UNITS

    if m := _ARITH.match(question):
        a, op, b = int(m[1]), m[2], int(m[3])
        return str({"+": a + b, "-": a - b, "x": a * b}[op])
    capitals = dict(CAPITALS)
    opposites = {a: b for a, b in OPPOSITES} | {b: a for a, b in OPPOSITES}
    if (m := _CAPITAL.match(question)) and m[1] in capitals:
        return capitals[m[1]]
    if (m := _OPPOSITE.match(question)) and m[1] in opposites:
        return opposites[m[1]]
    for template, factor in UNITS:
        head, tail = template.split("{x}")
        if question.startswith(head) and question.endswith(tail):
            return str(int(question[len(head):len(question) - len(tail)]) * factor)
    raise ValueError(f"right_answer: no rule for the critic question {question!r}")


def split_critic_input(text: str) -> tuple[str, str]:
    """(question, proposed answer) of a critic item's input."""
    m = _QUESTION.search(text)
    if not m:
        raise ValueError(f"split_critic_input: {text!r} has no 'Question: ... Proposed answer: ...'")
    return m["q"].strip(), m["a"].strip()


def same_answer(output: str, right: str) -> bool:
    """The model's direct answer ends its first line with the right one ("Rome", "11 x 2 = 22" and "the capital
    of China is Beijing" all count; case and end punctuation aside)."""
    lines = output.strip().splitlines()
    words = _TOKEN.findall(lines[0]) if lines else []
    return bool(words) and words[-1].strip(string.punctuation).lower() == right.lower()


def critic_chat(llm: Any) -> Callable[[list[dict[str, str]]], str]:
    """``messages -> answer`` through ``llm`` (a ``MeteredLLM``), greedy, one line: how the probe asks."""

    def ask(messages: list[dict[str, str]]) -> str:
        with llm.phase("test"):
            return llm.chat(messages, {"temperature": 0.0, "max_tokens": 16, "stop": ["\n"]},
                            purpose="bench:headroom:critic").text

    return ask


def critic_knowledge(chat: Callable[[list[dict[str, str]]], str], items: Sequence[Any],
                     results: Sequence[dict[str, Any]], test_ids: Sequence[str]) -> dict[str, Any]:
    """Ask the model every non-train critic question directly; split each arm's test verdicts by what it knows."""
    shots: dict[str, Any] = {}
    for it in sorted((i for i in items if i.split == "train"), key=lambda i: i.id):
        shots.setdefault(it.task, it)
    turns: list[dict[str, str]] = [{"role": "system", "content": "Answer the question with the answer only."}]
    for task in sorted(shots):
        q, _ = split_critic_input(shots[task].input)
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": right_answer(q)}]
    knows: dict[str, bool] = {}
    per_task: dict[str, list[int]] = defaultdict(list)
    for it in items:
        if it.split == "train":
            continue
        q, _ = split_critic_input(it.input)
        ok = same_answer(chat([*turns, {"role": "user", "content": q}]), right_answer(q))
        knows[it.id] = ok
        per_task[it.task].append(int(ok))
    known = [i for i in test_ids if knows.get(i)]
    arms = []
    for r in results:
        if r.get("status") != "ok" or not r.get("test", {}).get("outcomes"):
            continue
        out = dict(zip(test_ids, r["test"]["outcomes"], strict=True))
        unknown = [i for i in test_ids if not knows.get(i)]
        arms.append({
            "arm": r["arm"], "budget": r.get("budget"), "seed": r.get("seed"),
            "verdicts_right_where_model_knows": f"{sum(out[i] for i in known)}/{len(known)}",
            "verdicts_right_where_model_does_not": f"{sum(out[i] for i in unknown)}/{len(unknown)}",
        })
    return {
        "asked": len(knows), "answered_right": sum(knows.values()),
        "answered_right_per_task": {t: f"{sum(v)}/{len(v)}" for t, v in sorted(per_task.items())},
        "test_items_model_knows": f"{len(known)}/{len(test_ids)}",
        "prompt": "system 'Answer the question with the answer only.' + one train question per domain with its "
                  "right answer as chat turns; temperature 0, stop '\\n', max_tokens 16",
        "arms": arms,
    }


# ----- 3. support-desk: does the model copy the nearest example? -------------------------------------------------
def copy_rows(genome: Any, items: Sequence[Any], outcomes: Sequence[int]) -> dict[str, Any]:
    """Label-task items whose nearest shown example carries the expected label, and how many the prompt solves."""
    from genepool.core.genome import normalize_text

    per_task: dict[str, list[int]] = defaultdict(list)
    for it, ok in zip(items, outcomes, strict=True):
        if it.checker != "exact_label":
            continue
        shown = genome.shown_examples(it.input)
        if shown and normalize_text(shown[-1].output) == normalize_text(it.expected):
            per_task[it.task].append(int(ok))
    total = [x for v in per_task.values() for x in v]
    return {"items_nearest_shows_the_answer": len(total), "solved": sum(total),
            "per_task": {t: f"{sum(v)}/{len(v)}" for t, v in sorted(per_task.items())}}


# ----- 4. support-desk: other nearest-example structures -----------------------------------------------------------
def label_diverse(nearest_first: Sequence[Any], k: int) -> list[Any]:
    """``k`` examples from ``nearest_first`` (most similar first): the nearest of each label before a second of any."""
    from genepool.core.genome import normalize_text

    picked, labels = [], set()
    for e in nearest_first:
        if len(picked) >= k:
            break
        if normalize_text(e.output) not in labels:
            picked.append(e)
            labels.add(normalize_text(e.output))
    picked += [e for e in nearest_first if e not in picked][: k - len(picked)]
    return sorted(picked, key=nearest_first.index)


def structure_genome(pool_genome: Any, name: str, user_input: str) -> Any:
    """The fixed-example genome one request of structure ``name`` (``mode:k``) sends for ``user_input``."""
    mode, k = name.split(":")
    k = int(k)
    if mode == "nearest":
        shown = pool_genome.with_(example_select=k).shown_examples(user_input)  # most similar last
    else:
        ranked = list(reversed(pool_genome.with_(example_select=len(pool_genome.examples))
                               .shown_examples(user_input)))  # most similar first
        shown = tuple(ranked[:k]) if mode == "nearest_first" else tuple(reversed(label_diverse(ranked, k)))
    return pool_genome.with_(examples=tuple(shown), example_select=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)

    from benchmarks.compare import git_commit, load_splits, open_database
    from benchmarks.peers.common import MeteredLLM, evaluate_messages, genome_params
    from benchmarks.peers.fewshot_arm import knn_fewshot_genome
    from genepool.agents import load_agent_benchmark
    from genepool.core.genome import Genome
    from genepool.llm import LlamaCppProvider, LLMClient

    docs = {a: json.loads((RESULTS_DIR / a / "compare.json").read_text(encoding="utf-8"))
            for a in ("support-desk", "critic")}
    provider = LlamaCppProvider(seed=0, n_threads=args.threads)
    llm = MeteredLLM(LLMClient(provider, open_database(None)))
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit(),
        "task_model": provider.model, "lead": LEAD, "alpha": ALPHA,
        "goal": [goal_rows(d["results"], a) for a, d in docs.items()],
    }

    out["critic_knowledge"] = critic_knowledge(critic_chat(llm), load_agent_benchmark("critic"),
                                               docs["critic"]["results"], docs["critic"]["test_ids"])

    spec, train, val, test = load_splits("support-desk", False)
    sd = docs["support-desk"]
    if [it.id for it in test] != sd["test_ids"]:
        raise SystemExit("benchmarks/results/support-desk/compare.json was made on other test items; re-run it")
    best = next(g["best_other_arm"] for g in out["goal"] if g["agent_type"] == "support-desk")
    row = next(r for r in sd["results"] if r["arm"] == best)
    out["support_desk_copy"] = {"arm": best, **copy_rows(Genome.from_dict(row["final_prompt"]), test,
                                                         row["test"]["outcomes"])}

    pool = knn_fewshot_genome(spec.seed_genome, train, 1)
    structures = []
    for name in STRUCTURES:
        scored = {}
        for split, items in (("validation", val), ("test", test)):
            ev = evaluate_messages(llm, items, lambda x, name=name: structure_genome(pool, name, x).messages(x),
                                   genome_params(pool), purpose=f"bench:headroom:{name}")
            scored[split] = {"n": ev.n, "success_rate": ev.success_rate, "avg_tokens": ev.avg_tokens,
                             "per_task": ev.per_task}
        structures.append({"structure": name, **scored})
        rates = {split: f"{v['success_rate']:.1%}" for split, v in scored.items()}
        print(f"{name}: validation {rates['validation']}, test {rates['test']}", flush=True)
    out["support_desk_structures"] = structures
    out["model_calls"] = llm.summary("test")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
