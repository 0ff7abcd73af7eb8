"""GEPA arm (``gepa`` 0.1.4): reflective prompt evolution of the system prompt.

- seed candidate: ``{"system_prompt": <rendered seed system message>}``;
- task model: GEPA's default adapter builds ``[system, user]``; our ``task_lm`` inserts the seed genome's
  few-shot turns (if any) and uses the seed's decoding params, so GEPA optimises exactly the part of the
  prompt it is designed for and everything else equals the seed; every call goes through genepool's
  cached ``LLMClient`` (purpose ``gepa:task``);
- evaluator: genepool's strict checkers; GEPA gets ``CheckResult.score`` (partial credit for a right
  answer in the wrong format, a finer signal than success alone) and the checker message as feedback;
- reflection model: the same local model (purpose ``gepa:reflection``);
- budget: ``max_metric_calls=budget`` (GEPA checks it between iterations and may overshoot a little;
  the comparison reports the rollouts actually made).
"""

from __future__ import annotations

from typing import Any

from benchmarks.peers.common import (
    ArmContext,
    ArmResult,
    Stopwatch,
    evaluate_messages,
    genome_params,
    seed_system_text,
    short_error,
    system_with_turns,
)
from genepool.core.checkers import check
from genepool.llm import LLMError

REFLECTION_PARAMS = {"temperature": 0.0, "max_tokens": 256}


class _QuietLogger:
    """Keeps GEPA's log lines in memory instead of printing them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(str(message))


def run(ctx: ArmContext, budget: int) -> ArmResult:
    """The stock configuration: the agent's seed, every validation item, partial-credit score."""
    return _run(ctx, budget, "gepa", ctx.seed_genome, list(ctx.validation), strict=False)


def run_fair(ctx: ArmContext, budget: int) -> ArmResult:
    """GEPA given a fair start: the seed is the hand few-shot prompt (k=2 turns per task, stop "\\n"),
    GEPA optimises its system text on top of the turns; its valset is a stratified subsample the size
    genepool validates on (``GenerationConfig.validation_items``), its score the strict success (0/1)."""
    from benchmarks.peers.fewshot_arm import hand_fewshot_genome
    from genepool.settings import GenerationConfig

    seed = hand_fewshot_genome(ctx.seed_genome, ctx.train, 2)
    n_val = GenerationConfig().validation_items
    return _run(ctx, budget, "gepa-fair", seed, _stratified(ctx.validation, n_val, ctx.seed), strict=True)


def _stratified(items, n: int, seed: int):
    import random

    rng = random.Random(seed)
    by_task: dict[str, list] = {}
    for it in sorted(items, key=lambda i: i.id):
        by_task.setdefault(it.task, []).append(it)
    for t in sorted(by_task):
        rng.shuffle(by_task[t])
    out, queues = [], [by_task[t] for t in sorted(by_task)]
    while len(out) < min(n, len(items)):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _run(ctx: ArmContext, budget: int, arm: str, seed, valset, strict: bool) -> ArmResult:
    try:
        import gepa
        from gepa.adapters.default_adapter.default_adapter import EvaluationResult
    except ImportError as exc:
        return ArmResult(arm, budget, "unavailable", error=f"{short_error(exc)}; run `make bench` to install it")

    llm = ctx.metered()
    params = genome_params(seed)
    by_id = {it.id: it for it in [*ctx.train, *ctx.validation]}
    stats = {"reflection_errors": 0}
    reflection_params = {**REFLECTION_PARAMS, **ctx.options.get("gepa_reflection_params", {})}

    def to_inst(it) -> dict[str, Any]:
        return {"input": it.input, "answer": it.expected, "additional_context": {}, "id": it.id}

    def task_lm(messages) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        full = system_with_turns(system, seed)(messages[-1]["content"])
        # the custom part of the adapter: the seed's few-shot turns go between the system text GEPA
        # optimises and the user input, with the seed's decoding params
        return llm.chat(full, params, purpose="gepa:task").text

    def evaluator(data, response: str):
        r = check(by_id[data["id"]], response)
        score = float(r.success) if strict else float(r.score)
        return EvaluationResult(score=score, feedback=r.message, objective_scores=None)

    def reflection_lm(prompt) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        try:
            return llm.chat(messages, reflection_params, purpose="gepa:reflection").text
        except LLMError:
            stats["reflection_errors"] += 1  # e.g. the prompt does not fit the context window
            raise

    def enough_reflection(_state) -> bool:
        # Guard against a loop of failing reflections that spends no rollouts.
        return sum(r.purpose == "gepa:reflection" for r in llm.records) >= budget

    logger = _QuietLogger()
    sw = Stopwatch()
    try:
        with sw.lap("optimize"), llm.phase("optimize"):
            result = gepa.optimize(
                seed_candidate={"system_prompt": seed_system_text(seed)},
                trainset=[to_inst(it) for it in ctx.train],
                valset=[to_inst(it) for it in valset],
                task_lm=task_lm,
                evaluator=evaluator,
                reflection_lm=reflection_lm,
                max_metric_calls=budget,
                stop_callbacks=[enough_reflection],
                logger=logger,
                seed=ctx.seed,
                raise_on_exception=False,
                display_progress_bar=False,
            )
    except Exception as exc:
        return ArmResult(
            arm, budget, "failed", error=short_error(exc), optimize=llm.summary("optimize"), wall_s=sw.laps,
            extra={"log_tail": logger.lines[-20:]},
        )

    best_text = result.best_candidate["system_prompt"]
    with sw.lap("test"):
        test = evaluate_messages(llm, ctx.test, system_with_turns(best_text, seed), params, f"bench:{arm}:test")
    return ArmResult(
        arm=arm,
        budget=budget,
        status="ok",
        test=test.to_dict(),
        optimize=llm.summary("optimize"),
        wall_s=sw.laps,
        final_prompt={"system_prompt": best_text, "few_shot_turns": len(seed.examples), "params": params},
        extra={
            "candidates": len(result.candidates),
            "accepted_beyond_seed": len(result.candidates) - 1,
            "val_scores": [round(s, 4) for s in result.val_aggregate_scores],
            "best_idx": result.best_idx,
            "total_metric_calls": result.total_metric_calls,
            "proposals": [c["system_prompt"][:300] for c in result.candidates[1:6]],
            "reflection_errors": stats["reflection_errors"],
            "log_tail": logger.lines[-8:],
            "test_calls": llm.summary("test"),
            "valset_size": len(valset),
            "score": "strict success (0/1)" if strict else "checker score (partial credit)",
            "seed_examples": len(seed.examples),
        },
    )
