"""Side-by-side comparison of prompt optimisers on the same task model, splits and rollout budgets.

    python -m benchmarks.compare                    # budgets 300 and 1000, every arm
    python -m benchmarks.compare --with-3000        # also 3000
    python -m benchmarks.compare --quick            # small stratified subsets, budget 60: proves it runs
    python -m benchmarks.compare --budgets 100 --arms baseline,gepa

Arms (benchmarks/peers/): baseline (seed prompt), genepool (``genepool.steps.optimize``), GEPA
(``gepa.optimize``) and DSPy (MIPROv2, BootstrapFewShot, LabeledFewShot). Every LLM call goes through
genepool's ``LLMClient`` with its PostgreSQL cache (``Database.from_env()`` = the embedded server under
the project data dir, or ``--database-url``), so a re-run is cheap. Every final prompt is evaluated on
the same held-out test split with the same strict checkers. Results: ``<out>/compare.json`` (every
figure), ``compare.md`` (tables) and ``compare.png`` (plots).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.peers.common import ArmContext, ArmResult, short_error
from genepool.config import DEFAULT_AGENT, default_seed
from genepool.core.benchmark import Item, split_items

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL_ARMS = ("majority", "hand_fewshot", "knn_fewshot", "baseline", "genepool", "gepa-fair", "gepa", "dspy")
REFERENCE_ARM = "hand_fewshot_k2"  # the paired test of every arm is against this control
DEFAULT_BUDGETS = (300, 1000)
QUICK_BUDGETS = (60,)  # the smallest budget that fits one genepool generation (40 traces + 12 targets + 8 controls)
QUICK_PER_TASK = {"train": 3, "validation": 2, "test": 2}


# --- inputs -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", default=DEFAULT_AGENT, help="agent type (default: %(default)s)")
    ap.add_argument("--budgets", default=None,
                    help="comma-separated rollout budgets (default: 300,1000; with --quick: 60)")
    ap.add_argument("--with-3000", action="store_true", help="add the 3000-rollout budget")
    ap.add_argument("--quick", action="store_true",
                    help=f"small stratified subsets per task {QUICK_PER_TASK} and budget {QUICK_BUDGETS[0]}")
    ap.add_argument("--arms", default=",".join(ALL_ARMS), help="comma-separated subset of %(default)s")
    ap.add_argument("--seed", type=int, default=default_seed(), help="seed for every optimiser (default: %(default)s)")
    ap.add_argument("--database-url", default=None,
                    help="PostgreSQL URL for the LLM cache (default: GENEPOOL_DATABASE_URL or the embedded server)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: benchmarks/results/<agent>, or <agent>-quick with --quick)")
    ap.add_argument("--seeds", type=int, default=3,
                    help="seeds per stochastic arm (genepool, gepa-fair, gepa, dspy): seed, seed+1, ... "
                         "(default: %(default)s)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the results of <out>/compare.json that this run does not redo (same arm, budget, seed); "
                         "refused when the splits or the test items differ")
    ap.add_argument("--threads", type=int, default=2,
                    help="llama.cpp threads (default: %(default)s; 1 is faster when other jobs share the CPU)")
    ap.add_argument("--dspy-backend", choices=("inprocess", "server"), default="inprocess",
                    help="DSPy's LM: the shared in-process llama.cpp, or a local llama_cpp.server it starts")
    ap.add_argument("--combine", type=Path, nargs="+", default=None, metavar="DIR",
                    help="run no arm: merge the compare.json of these folders (same splits) with <out>/compare.json "
                         "and rewrite <out>/compare.json, .md and .png (parts run in parallel processes)")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds={args.seeds}: use 1 or more")
    if args.out is None:
        args.out = RESULTS_DIR / (args.agent + ("-quick" if args.quick else ""))
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in args.arms if a not in ALL_ARMS]
    if bad:
        ap.error(f"--arms: unknown arm(s) {bad}; use a comma-separated subset of {','.join(ALL_ARMS)}")
    if args.budgets:
        try:
            budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
        except ValueError:
            ap.error(f"--budgets={args.budgets!r}: use comma-separated integers, e.g. --budgets 100,300")
        if not budgets or any(b < 1 for b in budgets):
            ap.error(f"--budgets={args.budgets!r}: every budget must be a positive integer")
    else:
        budgets = list(QUICK_BUDGETS if args.quick else DEFAULT_BUDGETS)
    if args.with_3000 and 3000 not in budgets:
        budgets.append(3000)
    args.budgets = sorted(set(budgets))
    return args


def stratified_subset(items: list[Item], per_task: int) -> list[Item]:
    """The first ``per_task`` items of each task, in file order (deterministic)."""
    taken: dict[str, int] = defaultdict(int)
    out = []
    for it in items:
        if taken[it.task] < per_task:
            taken[it.task] += 1
            out.append(it)
    return out


def load_splits(agent_type: str, quick: bool) -> tuple[Any, list[Item], list[Item], list[Item]]:
    from genepool.agents import get_agent, load_agent_benchmark

    spec = get_agent(agent_type)
    items = load_agent_benchmark(agent_type)
    train, val, test = (split_items(items, s) for s in ("train", "validation", "test"))
    if quick:
        train = stratified_subset(train, QUICK_PER_TASK["train"])
        val = stratified_subset(val, QUICK_PER_TASK["validation"])
        test = stratified_subset(test, QUICK_PER_TASK["test"])
    for name, split in (("train", train), ("validation", val), ("test", test)):
        if not split:
            raise SystemExit(f"the {agent_type} benchmark has no {name} items; every split needs items")
    return spec, train, val, test


def open_database(url: str | None):
    from genepool.db import Database, migrate

    if url:
        db = Database(url)
        migrate(url)
        return db
    return Database.from_env()


def git_commit() -> str | None:
    """The commit the code ran at (plus '-dirty' when the code in the work tree differs: results and other JSON
    under benchmarks/ are not code), or None outside git."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "genepool", "benchmarks",
                                ":(exclude)benchmarks/results", ":(exclude)benchmarks/*.json"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("genepool", "gepa", "dspy", "llama_cpp_python", "litellm", "matplotlib", "psycopg"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# --- running ------------------------------------------------------------------------------------
def run_all(args: argparse.Namespace, ctx: ArmContext, on_result, previous: list[ArmResult] | None = None
            ) -> list[ArmResult]:
    from benchmarks.peers import baseline_arm, dspy_arm, fewshot_arm, genepool_arm, gepa_arm

    results: list[ArmResult] = list(previous or [])
    seeds = [args.seed + i for i in range(args.seeds)]

    def add(r: ArmResult | list[ArmResult], seed: int | None = None) -> None:
        for one in r if isinstance(r, list) else [r]:
            if seed is not None and one.seed is None:
                one.seed = seed
            one.extra.setdefault("git_commit", ctx.options.get("git_commit"))  # the code this result ran
            results[:] = [x for x in results if _key(x) != _key(one)]  # a re-run replaces its old result
            results.append(one)
            print(_line(one), flush=True)
            on_result(results)

    def guarded(arm: str, budget: int | None, fn, *a):
        try:
            return fn(*a)
        except Exception as exc:  # an arm that crashes is reported, the others still run
            return ArmResult(arm, budget, "failed", error=short_error(exc))

    def with_seed(seed: int) -> ArmContext:
        return replace(ctx, seed=seed)

    if "majority" in args.arms:
        add(guarded("majority", None, fewshot_arm.run_majority, ctx))
    if "hand_fewshot" in args.arms:
        for k in (1, 2):
            add(guarded(f"hand_fewshot_k{k}", None, fewshot_arm.run_hand_fewshot, ctx, k))
    if "knn_fewshot" in args.arms:
        for k in (2, 4):  # 4: the default of LangChain's similarity example selector
            add(guarded(f"knn_fewshot_k{k}", None, fewshot_arm.run_knn_fewshot, ctx, k))
    if "baseline" in args.arms:
        add(guarded("baseline", None, baseline_arm.run, ctx))
    if "dspy" in args.arms:
        add(guarded("dspy-labeled", None, dspy_arm.run_labeled, ctx))
    for budget in args.budgets:
        for seed in seeds:
            if "genepool" in args.arms:
                add(guarded("genepool", budget, genepool_arm.run, with_seed(seed), budget), seed)
            if "gepa-fair" in args.arms:
                add(guarded("gepa-fair", budget, gepa_arm.run_fair, with_seed(seed), budget), seed)
            if "gepa" in args.arms:
                add(guarded("gepa", budget, gepa_arm.run, with_seed(seed), budget), seed)
            if "dspy" in args.arms:
                add(guarded("dspy", budget, dspy_arm.run, with_seed(seed), budget), seed)
    return results


def _key(r: ArmResult) -> tuple:
    return (r.arm, r.budget, r.seed)


_ARM_ORDER = ("majority", "hand_fewshot_k1", "hand_fewshot_k2", "knn_fewshot_k2", "knn_fewshot_k4", "baseline",
              "dspy-labeled", "genepool", "gepa-fair",
              "gepa", "dspy-random-search", "dspy-mipro-light", "dspy-mipro-demos")


def _order(r: ArmResult) -> tuple:
    rank = _ARM_ORDER.index(r.arm) if r.arm in _ARM_ORDER else len(_ARM_ORDER)
    return (r.budget is not None, r.budget or 0, rank, r.arm, r.seed or 0)


def _line(r: ArmResult) -> str:
    b = "-" if r.budget is None else r.budget
    if r.status != "ok":
        return f"[{r.arm} @ {b}{'' if r.seed is None else f' seed {r.seed}'}] {r.status}: {r.error}"
    t = r.test or {}
    b = f"{b} seed {r.seed}" if r.seed is not None else b
    return (f"[{r.arm} @ {b}] test {t.get('successes')}/{t.get('n')} = {t.get('success_rate', 0):.1%}, "
            f"{t.get('avg_tokens')} tok/item, rollouts {r.rollouts}, wall {r.wall_s}")


# --- outputs ------------------------------------------------------------------------------------
def add_statistics(results: list[ArmResult]) -> dict[str, Any]:
    """95% bootstrap interval per result and the exact McNemar test against the hand few-shot control.

    Writes ``test["ci95"]``, ``test["n"]`` (already there) and ``extra["paired_vs_hand_fewshot"]`` in place;
    returns a summary per (arm, budget) over seeds.
    """
    from benchmarks import stats

    ref = next((r for r in results if r.arm == REFERENCE_ARM and r.status == "ok" and r.test), None)
    ref_out = (ref.test or {}).get("outcomes") if ref else None
    for r in results:
        if r.status != "ok" or not r.test or not r.test.get("outcomes"):
            continue
        outcomes = r.test["outcomes"]
        r.test["ci95"] = list(stats.bootstrap_ci(outcomes))
        if ref_out and len(ref_out) == len(outcomes) and r is not ref:
            s = stats.summarize(outcomes, ref_out)
            r.extra["paired_vs_hand_fewshot"] = {k: s[k] for k in ("paired_p", "diff", "diff_ci95", "discordant")}
        else:
            r.extra.pop("paired_vs_hand_fewshot", None)
    groups: dict[tuple, list[ArmResult]] = defaultdict(list)
    for r in results:
        if r.status == "ok" and r.test:
            groups[(r.arm, r.budget)].append(r)
    summary = []
    for (arm, budget), rs in groups.items():
        rates = [r.test["success_rate"] for r in rs]
        ps = [r.extra.get("paired_vs_hand_fewshot", {}).get("paired_p") for r in rs]
        summary.append({
            "arm": arm, "budget": budget, "seeds": [r.seed for r in rs], "n_test": rs[0].test["n"],
            "success_rates": rates, "mean_success": round(sum(rates) / len(rates), 4),
            "min_success": min(rates), "max_success": max(rates),
            "paired_p_vs_hand_fewshot": ps,
            "mean_tokens_per_item": round(sum(r.test["avg_tokens"] for r in rs) / len(rs), 1),
            "mean_rollouts": round(sum(r.rollouts for r in rs) / len(rs), 1),
        })
    return {"reference_arm": REFERENCE_ARM, "by_arm": summary}


def write_json(path: Path, meta: dict[str, Any], results: list[ArmResult]) -> None:
    summary = add_statistics(results)
    out = []
    for r in results:
        d = r.to_dict()
        d["paired_p_vs_hand_fewshot"] = r.extra.get("paired_vs_hand_fewshot", {}).get("paired_p")
        out.append(d)
    doc = {**meta, "statistics": summary, "results": out}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)  # never a half-written compare.json


def load_previous(path: Path, meta: dict[str, Any]) -> list[ArmResult]:
    """Results of an earlier run to merge with (``--merge``); refused when the splits differ."""
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"--merge: cannot read {path}: {exc}; move it away or run without --merge") from exc
    if doc.get("test_ids") != meta["test_ids"] or doc.get("splits") != meta["splits"]:
        raise SystemExit(f"--merge: {path} was made on other splits or test items; run without --merge")
    fields = {f for f in ArmResult.__dataclass_fields__}
    prev = []
    for i, d in enumerate(doc.get("results", [])):
        try:
            prev.append(ArmResult(**{k: v for k, v in d.items() if k in fields}))
        except TypeError as exc:
            raise SystemExit(f"--merge: {path} results[{i}] is not a result record ({exc})") from exc
    return prev


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write_markdown(path: Path, meta: dict[str, Any], results: list[ArmResult]) -> None:
    lines = [
        f"# Prompt optimisers side by side: {meta['agent_type']}" + (" (quick run)" if meta["quick"] else ""),
        "",
        f"{meta['date']} · task and reflection model `{meta['task_model']}` ({meta['provider']}) · "
        f"seed {meta['seed']} · budgets {meta['budgets']} · splits train {meta['splits']['train']}, "
        f"validation {meta['splits']['validation']}, test {meta['splits']['test']} · total wall {meta.get('wall_s')} s",
        "",
        "Rollouts = task-model calls made while optimising (cached or not); reflection = calls asking the "
        "model to write prompts; test success = strict checkers on the held-out test split.",
        "",
        f"Statistics: n = test items; 95% CI = percentile bootstrap over items; p = two-sided exact McNemar "
        f"test against `{REFERENCE_ARM}` on the same items (paired). Seeds: stochastic arms run once per seed.",
        "",
        "| arm | budget | seed | status | n | test success | 95% CI | p vs hand_fewshot | tokens/item | rollouts "
        "| reflection calls | optimise s | test s | model s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r.test or {}
        o = r.optimize or {}
        ci = t.get("ci95")
        p = (r.extra or {}).get("paired_vs_hand_fewshot", {}).get("paired_p")
        lines.append(
            f"| {r.arm} | {r.budget if r.budget is not None else '-'} | {r.seed if r.seed is not None else '-'} "
            f"| {r.status} | {t.get('n', '-')} | {_pct(t.get('success_rate'))} "
            f"| {'-' if not ci else f'{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%'} | {'-' if p is None else f'{p:.3g}'} "
            f"| {t.get('avg_tokens', '-')} | {o.get('rollouts', 0)} | {o.get('reflection_calls', 0)} "
            f"| {r.wall_s.get('optimize', '-')} | {r.wall_s.get('test', '-')} | "
            f"{round((o.get('model_ms', 0) + (t.get('model_ms') or 0)) / 1000, 1)} |"
        )
    summary = add_statistics(results)["by_arm"]
    multi = [g for g in summary if len(g["seeds"]) > 1]
    if multi:
        lines += ["", "## Over seeds", "", "| arm | budget | seeds | n | mean success | min–max | p per seed |",
                  "|---|---|---|---|---|---|---|"]
        for g in multi:
            ps = ", ".join("-" if p is None else f"{p:.3g}" for p in g["paired_p_vs_hand_fewshot"])
            lines.append(f"| {g['arm']} | {g['budget']} | {len(g['seeds'])} | {g['n_test']} "
                         f"| {_pct(g['mean_success'])} | {_pct(g['min_success'])}–{_pct(g['max_success'])} | {ps} |")
    fronts = [r for r in results if r.status == "ok" and (r.extra or {}).get("front")]
    if fronts:
        lines += ["", "## genepool front members on test (best by validation marked)", "",
                  "| budget | seed | validation success | test success | tokens/item | examples | stop | best |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in fronts:
            for f in r.extra["front"]:
                g = f.get("genome") or {}
                lines.append(f"| {r.budget} | {r.seed} | {_pct(f.get('validation_success'))} "
                             f"| {_pct(f.get('test_success'))} | {f.get('test_avg_tokens')} "
                             f"| {len(g.get('examples', []))} | {g.get('params', {}).get('stop')} "
                             f"| {'yes' if f.get('is_best') else ''} |")
    tasks = sorted({task for r in results if r.test for task in r.test["per_task"]})
    if tasks:
        lines += ["", "## Test success per task", "", "| arm | budget | " + " | ".join(tasks) + " |",
                  "|---|---|" + "---|" * len(tasks)]
        for r in results:
            if r.test:
                cells = " | ".join(_pct(r.test["per_task"].get(task)) for task in tasks)
                lines.append(f"| {r.arm} | {r.budget if r.budget is not None else '-'} | {cells} |")
    failed = [r for r in results if r.status != "ok"]
    if failed:
        lines += ["", "## Arms that did not produce a prompt", ""]
        for r in failed:
            spent = (r.optimize or {}).get("calls", 0)
            error = " ".join(str(r.error).split())  # one line; compare.json keeps the full text
            lines.append(f"- **{r.arm}** @ {r.budget}: {r.status} after {spent} model calls — `{error}`")
    lines += ["", "## Failure modes on test (checker signatures)", ""]
    for r in results:
        if r.test:
            sigs = ", ".join(f"{k} {v}" for k, v in r.test["signatures"].items())
            lines.append(f"- {r.arm} @ {r.budget if r.budget is not None else '-'}: {sigs}")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_plot(path: Path, meta: dict[str, Any], results: list[ArmResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.status == "ok" and r.test]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    by_arm: dict[str, list[ArmResult]] = defaultdict(list)
    for r in ok:
        by_arm[r.arm].append(r)
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)
    for arm, rs in sorted(by_arm.items()):
        color = next(colors)
        if all(r.budget is None for r in rs):  # controls without rollouts: a line with its 95% band
            y = 100 * rs[0].test["success_rate"]
            ci = rs[0].test.get("ci95") or [y / 100, y / 100]
            ax.axhline(y, linestyle="--", linewidth=1, color=color, label=f"{arm} (no rollouts)")
            ax.axhspan(100 * ci[0], 100 * ci[1], color=color, alpha=0.08)
            continue
        rs.sort(key=lambda r: (r.rollouts, r.seed or 0))
        xs = [r.rollouts for r in rs]
        ys = [100 * r.test["success_rate"] for r in rs]
        lo = [100 * (r.test["success_rate"] - (r.test.get("ci95") or [r.test["success_rate"]] * 2)[0]) for r in rs]
        hi = [100 * ((r.test.get("ci95") or [r.test["success_rate"]] * 2)[1] - r.test["success_rate"]) for r in rs]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", linestyle="none", capsize=3, color=color,
                    label=f"{arm} (each seed, 95% CI)")
    for r in results:
        if r.status != "ok" and r.budget:
            ax.plot([r.budget], [0], marker="x", color="red", linestyle="none")
            ax.annotate(f"{r.arm} {r.status}", (r.budget, 0), fontsize=7, color="red",
                        textcoords="offset points", xytext=(3, 4))
    ax.set_xlabel("rollouts used (task-model calls while optimising)")
    ax.set_ylabel("held-out test success (%)")
    ax.set_title("Test success vs rollouts")
    ax.set_ylim(-3, 103)
    ax.legend(fontsize=7)

    labels = [f"{r.arm}\n@{r.budget if r.budget is not None else '-'}" for r in ok]
    axes[1].bar(range(len(ok)), [r.test["avg_prompt_tokens"] for r in ok], label="prompt")
    axes[1].bar(range(len(ok)), [r.test["avg_completion_tokens"] for r in ok],
                bottom=[r.test["avg_prompt_tokens"] for r in ok], label="completion")
    axes[1].set_xticks(range(len(ok)), labels, fontsize=7)
    axes[1].set_ylabel("tokens per test item")
    axes[1].set_title("Cost of the final prompt")
    axes[1].legend(fontsize=7)

    allr = [r for r in results if r.wall_s]
    labels = [f"{r.arm}\n@{r.budget if r.budget is not None else '-'}" for r in allr]
    opt = [r.wall_s.get("optimize", 0) for r in allr]
    tst = [r.wall_s.get("test", 0) for r in allr]
    axes[2].bar(range(len(allr)), opt, label="optimise")
    axes[2].bar(range(len(allr)), tst, bottom=opt, label="test evaluation")
    axes[2].set_xticks(range(len(allr)), labels, fontsize=7)
    axes[2].set_ylabel("wall time (s, this run; cache hits are fast)")
    axes[2].set_title("Wall time")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"{meta['agent_type']} on {meta['task_model']}" + (" — quick run" if meta["quick"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme_table(folders: list[Path]) -> str:
    """The README's results table, generated from committed compare.json files (one row per result)."""
    lines = ["| agent | arm | budget | seed | n | test success | 95% CI | p vs hand_fewshot_k2 | tokens/item "
             "| rollouts |", "|---|---|---|---|---|---|---|---|---|---|"]
    for folder in folders:
        doc = json.loads((folder / "compare.json").read_text(encoding="utf-8"))
        for r in doc["results"]:
            t = r.get("test") or {}
            b = "-" if r["budget"] is None else r["budget"]
            seed = "-" if r.get("seed") is None else r["seed"]
            if r["status"] != "ok":
                err = " ".join(str(r.get("error")).split())[:90]
                lines.append(f"| {doc['agent_type']} | {r['arm']} | {b} | {seed} | - | {r['status']}: `{err}` "
                             f"| - | - | - | {(r.get('optimize') or {}).get('rollouts', 0)} |")
                continue
            ci = t.get("ci95")
            p = r.get("paired_p_vs_hand_fewshot")
            lines.append(
                f"| {doc['agent_type']} | {r['arm']} | {b} | {seed} | {t['n']} | {_pct(t['success_rate'])} "
                f"| {'-' if not ci else f'{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%'} "
                f"| {'-' if p is None else f'{p:.3g}'} | {t['avg_tokens']:.0f} "
                f"| {(r.get('optimize') or {}).get('rollouts', 0)} |")
    return "\n".join(lines)


def readme_summary(folders: list[Path]) -> str:
    """Per agent, arm and budget: the mean over seeds, its range, and how many seeds beat ``hand_fewshot_k2``
    significantly (exact McNemar p < 0.05 with a higher success rate), from the same compare.json files."""
    docs = [json.loads((folder / "compare.json").read_text(encoding="utf-8")) for folder in folders]
    lines = ["| agent | arm | budget | seeds | mean test success | range | significant wins / losses vs "
             "hand_fewshot_k2 | mean tokens/item | mean rollouts |", "|---|---|---|---|---|---|---|---|---|"]
    for doc in docs:
        ref = next((r for r in doc["results"] if r["arm"] == REFERENCE_ARM and r["status"] == "ok"), None)
        ref_rate = (ref or {}).get("test", {}).get("success_rate")
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in doc["results"]:
            if r["status"] == "ok" and r.get("test"):
                groups[(r["arm"], r["budget"])].append(r)
        order = sorted(groups, key=lambda k: (k[1] is not None, k[1] or 0,
                                              _ARM_ORDER.index(k[0]) if k[0] in _ARM_ORDER else 99, k[0]))
        for arm, budget in order:
            rs = groups[(arm, budget)]
            rates = [r["test"]["success_rate"] for r in rs]
            wins = losses = 0
            for r in rs:
                p = r.get("paired_p_vs_hand_fewshot")
                if p is not None and p < 0.05 and ref_rate is not None:
                    wins += r["test"]["success_rate"] > ref_rate
                    losses += r["test"]["success_rate"] < ref_rate
            lines.append(
                f"| {doc['agent_type']} | {arm} | {'-' if budget is None else budget} | {len(rs)} "
                f"| {_pct(sum(rates) / len(rates))} | {_pct(min(rates))}–{_pct(max(rates))} "
                f"| {'-' if arm == REFERENCE_ARM else f'{wins} / {losses}'} "
                f"| {sum(r['test']['avg_tokens'] for r in rs) / len(rs):.0f} "
                f"| {sum((r.get('optimize') or {}).get('rollouts', 0) for r in rs) / len(rs):.0f} |")
    lines += ["", "Front members against the best other arm (highest test success; a tie goes to fewer tokens):", "",
              "| agent | budget | seed | best other arm | its test success / tokens | most accurate genepool front "
              "member with fewer tokens | as accurate and cheaper? |", "|---|---|---|---|---|---|---|"]
    for doc in docs:
        ok = [r for r in doc["results"] if r["status"] == "ok" and r.get("test")]
        for g in (r for r in ok if r["arm"] == "genepool"):
            others = [r for r in ok if r["arm"] != "genepool" and (r["budget"] is None or r["budget"] == g["budget"])]
            if not others:
                continue
            best = max(others, key=lambda r: (r["test"]["success_rate"], -r["test"]["avg_tokens"]))
            bt, bs = best["test"]["avg_tokens"], best["test"]["success_rate"]
            cheaper = [m for m in (g.get("extra") or {}).get("front", []) if m.get("test_avg_tokens", bt) < bt]
            top = max(cheaper, key=lambda m: m["test_success"], default=None)
            where = "" if best["budget"] is None else f" @ {best['budget']} seed {best.get('seed')}"
            member = "-" if top is None else f"{_pct(top['test_success'])} / {top['test_avg_tokens']:.0f}"
            verdict = "yes" if top is not None and top["test_success"] >= bs else "no"
            lines.append(f"| {doc['agent_type']} | {g['budget']} | {g.get('seed')} | {best['arm']}{where} "
                         f"| {_pct(bs)} / {bt:.0f} | {member} | {verdict} |")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------
README_BLOCKS = {"bench-table": readme_table, "bench-summary": readme_summary}


def write_readme(readme: Path, folders: list[Path]) -> None:
    """Rewrite the README's ``<!-- bench-table:start/end -->`` and ``<!-- bench-summary:start/end -->`` blocks
    from the results in ``folders``; everything outside the markers is kept as it is."""
    text = readme.read_text(encoding="utf-8")
    for name, render in README_BLOCKS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise SystemExit(f"{readme}: needs exactly one {start} followed by one {end}")
        head, rest = text.split(start, 1)
        text = head + start + "\n" + render(folders).strip() + "\n" + end + rest.split(end, 1)[1]
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(readme)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--readme-table", "--readme-summary", "--write-readme"):
        folders = [Path(a) for a in argv[1:]] or sorted(p.parent for p in RESULTS_DIR.glob("*/compare.json"))
        if argv[0] == "--write-readme":
            readme = RESULTS_DIR.parent.parent / "README.md"
            write_readme(readme, folders)
            print(f"rewrote the benchmark tables of {readme}")
        else:
            print(README_BLOCKS["bench-" + argv[0].removeprefix("--readme-")](folders))
        return 0
    args = parse_args(argv)
    started = time.perf_counter()
    from genepool.db import redact
    from genepool.llm import LlamaCppProvider, LLMClient

    spec, train, val, test = load_splits(args.agent, args.quick)
    db = open_database(args.database_url)
    provider = LlamaCppProvider(seed=0, n_threads=args.threads)
    client = LLMClient(provider, db)
    args.out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "agent_type": args.agent,
        "quick": args.quick,
        "budgets": args.budgets,
        "arms": args.arms,
        "seed": args.seed,
        "task_model": provider.model,
        "task_model_path": provider.model_path,
        "reflection_model": provider.model,
        "provider": provider.name,
        "dspy_backend": args.dspy_backend,
        "decoding": f"temperature from each prompt's params (0 = greedy), llama.cpp seed 0, n_ctx 2048, "
                    f"{args.threads} thread(s)",
        "splits": {"train": len(train), "validation": len(val), "test": len(test)},
        "test_ids": [it.id for it in test],
        "database": redact(db.url),
        "versions": versions(),
        "git_commit": git_commit(),
        "argv": sys.argv[1:] if argv is None else argv,
    }
    ctx = ArmContext(args.agent, spec.seed_genome, train, val, test, client, args.seed, args.quick)
    ctx.options["git_commit"] = meta["git_commit"]
    if not args.database_url:  # the genepool arm's scratch registries are created by the database owner
        from genepool.db import resolve_urls

        ctx.options["owner_url"] = resolve_urls().owner
    server = None
    if "dspy" in args.arms and args.dspy_backend == "server":
        from benchmarks.peers import llama_server
        from genepool.llm import OpenAICompatibleProvider

        server = llama_server.start(provider.model_path, args.out / "llama_server.log", n_threads=args.threads)
        ctx.options["dspy_client"] = LLMClient(OpenAICompatibleProvider(server.base_url, server.model_alias), db)
        meta["dspy_server"] = {"pid": server.proc.pid, "base_url": server.base_url}

    def checkpoint(results: list[ArmResult]) -> None:
        meta["wall_s"] = round(time.perf_counter() - started, 1)
        write_json(args.out / "compare.json", meta, results)

    print(f"comparing {args.arms} on {args.agent} (train {len(train)}, validation {len(val)}, test {len(test)}), "
          f"budgets {args.budgets}, model {provider.model}", flush=True)
    try:
        previous = load_previous(args.out / "compare.json", meta) if args.merge or args.combine else []
        if args.combine:
            for folder in args.combine:
                for r in load_previous(folder / "compare.json", meta):
                    previous = [x for x in previous if _key(x) != _key(r)] + [r]
            results = sorted(previous, key=_order)
        else:
            results = run_all(args, ctx, checkpoint, previous)
    finally:
        if server is not None:
            server.stop()
    checkpoint(results)
    write_markdown(args.out / "compare.md", meta, results)
    write_plot(args.out / "compare.png", meta, results)
    print(f"wrote {args.out}/compare.json, compare.md, compare.png in {meta['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
