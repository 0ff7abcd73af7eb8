"""DSPy arm (``dspy`` 3.4.1): MIPROv2, and the few-shot optimisers that run with a tiny model.

Program: ``dspy.Predict(Signature("message -> answer", instructions=<seed system text>))``.
The DSPy LM is ``dspy.LM(..., engine=GenepoolEngine(...), cache=False)``: a DSPy custom engine that sends
each request through genepool's cached, metered ``LLMClient``. By default that client is the same
in-process llama.cpp SmolLM2 as every other arm (``--dspy-backend inprocess``); with
``--dspy-backend server`` the comparison starts ``python -m llama_cpp.server`` on 127.0.0.1 and the
client uses ``OpenAICompatibleProvider`` (the route litellm would take), still cached in PostgreSQL.
DSPy's own disk cache is off so its calls are counted like everyone else's.

Results per budget (every failure is recorded as the result, verbatim, with the calls spent before it):
- ``dspy-mipro-light``: MIPROv2 ``auto="light"`` (DSPy's own sizing), valset the size genepool validates on;
- ``dspy-mipro-demos``: what a practitioner tries when the instruction proposer fails on a tiny model:
  ``auto=None``, 2 candidates, trials sized from the budget, every proposer aid off (program, dataset
  summary, tips, demos), so the search is mostly over demo sets;
- ``dspy-random-search``: ``BootstrapFewShotWithRandomSearch`` with as many candidate programs as the
  budget pays for on the valset. It takes no seed (its candidates are always seeded -3, -2, ..., n), so
  ``ctx.seed`` reaches only MIPROv2 and another seed repeats the same run (from the cache).

Every budgeted arm runs under a hard cap of ``budget`` rollouts (``MeteredLLM(rollout_cap=...)``): DSPy
sizes its search in candidates and trials, not calls, and its bootstrapping on train comes on top of the
valset evaluations, so without the cap it overspent (435 rollouts at 300). A rollout asked for past the
cap raises ``RolloutBudgetExhausted``, which DSPy counts as a failed example (score 0), so a candidate
scored after the budget is spent cannot be chosen over one scored within it; ``optimize.refused_over_cap``
records how many calls were refused.
Budget-free: ``dspy-labeled``: ``LabeledFewShot(k=GenerationConfig.max_examples)`` (no rollouts).

Test evaluation runs the compiled DSPy program and scores the RAW completion of each item's last task call
with the same strict checkers as every other arm (DSPy's field markers count as extra text); the success
rate of the parsed ``answer`` field is kept next to it (``extra.parsed_answer_success_rate``).
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks.peers.common import (
    ArmContext,
    ArmResult,
    MeteredLLM,
    Stopwatch,
    evaluate_outputs,
    seed_system_text,
    short_error,
)
from genepool.core.checkers import check

TASK_MAX_TOKENS = 96  # DSPy replies wrap the answer in field markers; room for "[[ ## answer ## ]] ..."
PROMPT_MAX_TOKENS = 384
DEMOS = 4


class GenepoolEngine:
    """A DSPy custom engine (``complete(Request) -> Response``) over genepool's LLMClient."""

    def __init__(self, llm: MeteredLLM, purpose: str, default_max_tokens: int):
        self.llm = llm
        self.purpose = purpose
        self.default_max_tokens = default_max_tokens

    def complete(self, request):
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, TextPart, Usage

        validate_request(request)
        messages: list[dict[str, str]] = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
        cfg = request.config
        params = {
            "temperature": float(cfg.temperature or 0.0),
            "max_tokens": int(cfg.max_tokens or self.default_max_tokens),
            "stop": list(cfg.stop or ()),
        }
        comp = self.llm.chat(messages, params, purpose=self.purpose)
        return Response(
            id=comp.request_hash[:16],
            model=self.llm.model,
            message=Message.assistant([TextPart(comp.text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=comp.prompt_tokens, output_tokens=comp.completion_tokens,
                        total_tokens=comp.total_tokens),
        )

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def _lms(llm: MeteredLLM):
    import dspy

    task = dspy.LM(f"genepool/{llm.model}", engine=GenepoolEngine(llm, "dspy:task", TASK_MAX_TOKENS),
                   cache=False, temperature=0.0, max_tokens=TASK_MAX_TOKENS, num_retries=0)
    prompt = dspy.LM(f"genepool/{llm.model}", engine=GenepoolEngine(llm, "dspy:prompt_model", PROMPT_MAX_TOKENS),
                     cache=False, temperature=0.0, max_tokens=PROMPT_MAX_TOKENS, num_retries=0)
    return task, prompt


def _program(instructions: str):
    import dspy

    sig = dspy.Signature("message -> answer", instructions=instructions)
    return dspy.Predict(sig)


def _examples(items) -> list:
    import dspy

    return [dspy.Example(message=it.input, answer=it.expected, item_id=it.id).with_inputs("message") for it in items]


def _metric(by_id):
    def metric(example, pred, trace=None) -> bool:
        answer = getattr(pred, "answer", None)
        return bool(answer is not None and check(by_id[example.item_id], str(answer)).success)

    return metric


def _describe(program) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, pred in program.named_predictors():
        out[name] = {
            "instructions": pred.signature.instructions,
            "demos": [{k: str(v)[:200] for k, v in dict(d).items() if k in ("message", "answer")} for d in pred.demos],
        }
    return out


def _evaluate_program(llm: MeteredLLM, program, items, task_lm):
    """Scored on the RAW completion of the item's last task call (like every other arm), not on DSPy's
    parsed ``answer`` field; the parsed field's success rate is kept next to it for reference."""
    import dspy

    outputs, parsed, tokens, ms = [], [], [], 0.0
    with llm.phase("test"), dspy.context(lm=task_lm):
        for it in items:
            start = len(llm.records)
            try:
                answer = str(program(message=it.input).answer)
            except Exception:  # AdapterParseError and friends: the program produced no answer
                answer = ""
            recs = llm.records[start:]
            outputs.append(recs[-1].text if recs else "")
            parsed.append(answer)
            tokens.append((sum(r.prompt_tokens for r in recs), sum(r.completion_tokens for r in recs)))
            ms += sum(r.latency_ms for r in recs)
    ev = evaluate_outputs(items, outputs, tokens, ms)
    parsed_ok = sum(check(it, a).success for it, a in zip(items, parsed, strict=True))
    return ev, round(parsed_ok / len(items), 4)


def _silence() -> None:
    for name in ("dspy", "LiteLLM", "litellm", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _finish(arm, budget, llm, sw, program, task_lm, ctx, extra=None) -> ArmResult:
    with sw.lap("test"):
        test, parsed_rate = _evaluate_program(llm, program, ctx.test, task_lm)
    return ArmResult(
        arm=arm, budget=budget, status="ok", test=test.to_dict(), optimize=llm.summary("optimize"),
        wall_s=sw.laps, final_prompt=_describe(program),
        extra={**(extra or {}), "test_calls": llm.summary("test"), "parsed_answer_success_rate": parsed_rate},
    )


def _client_for(ctx: ArmContext):
    return ctx.options.get("dspy_client") or ctx.client


def run_labeled(ctx: ArmContext) -> ArmResult:
    """LabeledFewShot with k = genepool's example cap (``GenerationConfig.max_examples``): demos sampled from
    the training labels, no rollouts."""
    from genepool.settings import GenerationConfig

    try:
        import dspy
    except ImportError as exc:
        return ArmResult("dspy-labeled", None, "unavailable", error=f"{short_error(exc)}; run `make bench`")
    _silence()
    llm = MeteredLLM(_client_for(ctx))
    task_lm, _ = _lms(llm)
    sw = Stopwatch()
    try:
        with sw.lap("optimize"), llm.phase("optimize"), dspy.context(lm=task_lm):
            program = dspy.LabeledFewShot(k=GenerationConfig().max_examples).compile(
                _program(seed_system_text(ctx.seed_genome)), trainset=_examples(ctx.train), sample=True
            )
    except Exception as exc:
        return ArmResult("dspy-labeled", None, "failed", error=short_error(exc), optimize=llm.summary("optimize"))
    return _finish("dspy-labeled", None, llm, sw, program, task_lm, ctx)


def run(ctx: ArmContext, budget: int) -> list[ArmResult]:
    """MIPROv2 as a practitioner runs it (``auto="light"``, then, if its instruction proposer fails on the
    tiny model, demos only with every proposer aid switched off), and BootstrapFewShotWithRandomSearch with
    as many candidate programs as the budget pays for. Each failure is reported verbatim."""
    arms = ("dspy-mipro-light", "dspy-mipro-demos", "dspy-random-search")
    try:
        import dspy
    except ImportError as exc:
        err = f"{short_error(exc)}; run `make bench` to install it"
        return [ArmResult(a, budget, "unavailable", error=err) for a in arms]
    from genepool.settings import GenerationConfig

    _silence()
    by_id = {it.id: it for it in [*ctx.train, *ctx.validation]}
    metric = _metric(by_id)
    n_val = min(len(ctx.validation), GenerationConfig().validation_items)
    train, val = _examples(ctx.train), _examples(ctx.validation[:n_val])
    instructions = seed_system_text(ctx.seed_genome)
    results: list[ArmResult] = []

    def attempt(arm: str, compile_fn, extra: dict) -> ArmResult:
        llm = MeteredLLM(_client_for(ctx), rollout_cap=budget)  # DSPy cannot size its search in calls
        task_lm, prompt_lm = _lms(llm)
        sw = Stopwatch()
        try:
            with sw.lap("optimize"), llm.phase("optimize"), dspy.context(lm=task_lm):
                program = compile_fn(task_lm, prompt_lm)
        except Exception as exc:
            return ArmResult(arm, budget, "failed", error=short_error(exc, limit=2000),
                             optimize=llm.summary("optimize"),
                             wall_s=sw.laps, extra=extra)
        return _finish(arm, budget, llm, sw, program, task_lm, ctx, extra)

    # --- MIPROv2, auto="light" (DSPy's own sizing) ------------------------------------------------
    def mipro_light(task_lm, prompt_lm):
        tp = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto="light", num_threads=1,
                          max_bootstrapped_demos=2, max_labeled_demos=2, seed=ctx.seed, verbose=False,
                          max_errors=10_000)
        return tp.compile(_program(instructions), trainset=train, valset=val)

    light = attempt("dspy-mipro-light", mipro_light, {"auto": "light", "valset": len(val)})
    results.append(light)

    # --- MIPROv2 when the proposer fails: demos only, no dataset summary / program / tip / demo aids -----
    minibatch = max(2, min(len(val), 10))
    trials = max(1, (budget - len(val)) // minibatch)

    def mipro_demos(task_lm, prompt_lm):
        tp = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto=None, num_candidates=2,
                          num_threads=1, max_bootstrapped_demos=4, max_labeled_demos=4, seed=ctx.seed,
                          verbose=False, max_errors=10_000)
        return tp.compile(_program(instructions), trainset=train, valset=val, num_trials=trials, minibatch=True,
                          minibatch_size=minibatch, minibatch_full_eval_steps=max(trials, 1),
                          program_aware_proposer=False, data_aware_proposer=False, tip_aware_proposer=False,
                          fewshot_aware_proposer=False)

    results.append(attempt("dspy-mipro-demos", mipro_demos,
                           {"num_trials": trials, "minibatch_size": minibatch, "proposer_aids": "all off",
                            "after": f"dspy-mipro-light {light.status}"}))

    # --- BootstrapFewShotWithRandomSearch: candidates = what the budget pays for on the valset ---------
    n_candidates = max(1, budget // max(1, len(val)) - 3)  # it also scores 3 fixed programs on the valset

    def random_search(task_lm, prompt_lm):
        tp = dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=DEMOS,
                                                   max_labeled_demos=DEMOS, num_candidate_programs=n_candidates,
                                                   num_threads=1, max_errors=10_000)
        return tp.compile(_program(instructions), trainset=train, valset=val)

    results.append(attempt("dspy-random-search", random_search,
                           {"num_candidate_programs": n_candidates, "valset": len(val)}))
    return results
