"""DSPy arm (``dspy`` 3.4.1): MIPROv2, and the few-shot optimisers that run with a tiny model.

Program: ``dspy.Predict(Signature("message -> answer", instructions=<seed system text>))``.
The DSPy LM is ``dspy.LM(..., engine=GenepoolEngine(...), cache=False)``: a DSPy custom engine that sends
each request through genepool's cached, metered ``LLMClient``. By default that client is the same
in-process llama.cpp SmolLM2 as every other arm (``--dspy-backend inprocess``); with
``--dspy-backend server`` the comparison starts ``python -m llama_cpp.server`` on 127.0.0.1 and the
client uses ``OpenAICompatibleProvider`` (the route litellm would take), still cached in PostgreSQL.
DSPy's own disk cache is off so its calls are counted like everyone else's.

Results per budget:
- ``dspy-mipro``: MIPROv2 (``auto=None``; trials and minibatches sized from the budget). With SmolLM2
  it is expected to fail in the instruction proposer (``AdapterParseError``): the failure is recorded
  as the result, with the error and the calls spent before it.
- ``dspy-bootstrap``: ``BootstrapFewShot`` on at most ``budget`` training items (one rollout each).
Budget-free: ``dspy-labeled``: ``LabeledFewShot(k=4)`` (no rollouts at all).

Test evaluation runs the compiled DSPy program (its adapter parses the ``answer`` field) and checks the
parsed answer with the same strict checkers; an unparsable reply scores as ``dspy_parse_error``.
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
    import dspy

    outputs, tokens, ms = [], [], 0.0
    with llm.phase("test"), dspy.context(lm=task_lm):
        for it in items:
            start = len(llm.records)
            try:
                answer = str(program(message=it.input).answer)
            except Exception:  # AdapterParseError and friends: the program produced no answer
                answer = ""
            recs = llm.records[start:]
            outputs.append(answer)
            tokens.append((sum(r.prompt_tokens for r in recs), sum(r.completion_tokens for r in recs)))
            ms += sum(r.latency_ms for r in recs)
    ev = evaluate_outputs(items, outputs, tokens, ms)
    # An empty answer from a parse failure is reported under its own signature.
    if "empty_output" in ev.signatures:
        ev.signatures["dspy_parse_error_or_empty"] = ev.signatures.pop("empty_output")
    return ev


def _silence() -> None:
    for name in ("dspy", "LiteLLM", "litellm", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _finish(arm, budget, llm, sw, program, task_lm, ctx, extra=None) -> ArmResult:
    with sw.lap("test"):
        test = _evaluate_program(llm, program, ctx.test, task_lm)
    return ArmResult(
        arm=arm, budget=budget, status="ok", test=test.to_dict(), optimize=llm.summary("optimize"),
        wall_s=sw.laps, final_prompt=_describe(program), extra={**(extra or {}), "test_calls": llm.summary("test")},
    )


def _client_for(ctx: ArmContext):
    return ctx.options.get("dspy_client") or ctx.client


def run_labeled(ctx: ArmContext) -> ArmResult:
    """LabeledFewShot(k=4): demos are sampled from the training labels, no rollouts."""
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
            program = dspy.LabeledFewShot(k=DEMOS).compile(
                _program(seed_system_text(ctx.seed_genome)), trainset=_examples(ctx.train), sample=True
            )
    except Exception as exc:
        return ArmResult("dspy-labeled", None, "failed", error=short_error(exc), optimize=llm.summary("optimize"))
    return _finish("dspy-labeled", None, llm, sw, program, task_lm, ctx)


def run(ctx: ArmContext, budget: int) -> list[ArmResult]:
    try:
        import dspy
    except ImportError as exc:
        err = f"{short_error(exc)}; run `make bench` to install it"
        return [ArmResult("dspy-mipro", budget, "unavailable", error=err),
                ArmResult("dspy-bootstrap", budget, "unavailable", error=err)]
    _silence()
    by_id = {it.id: it for it in [*ctx.train, *ctx.validation]}
    metric = _metric(by_id)
    train, val = _examples(ctx.train), _examples(ctx.validation)
    instructions = seed_system_text(ctx.seed_genome)
    results: list[ArmResult] = []

    # --- MIPROv2 ---------------------------------------------------------------------------------
    llm = MeteredLLM(_client_for(ctx))
    task_lm, prompt_lm = _lms(llm)
    sw = Stopwatch()
    minibatch = max(2, min(len(val), 10))
    trials = max(1, (budget - len(val)) // minibatch)  # the default program's full validation pass + trials
    try:
        with sw.lap("optimize"), llm.phase("optimize"), dspy.context(lm=task_lm):
            tp = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto=None,
                              num_candidates=3, num_threads=1, max_bootstrapped_demos=2, max_labeled_demos=2,
                              seed=ctx.seed, verbose=False, max_errors=10_000)
            program = tp.compile(_program(instructions), trainset=train, valset=val, num_trials=trials,
                                 minibatch=True, minibatch_size=minibatch, minibatch_full_eval_steps=max(trials, 1))
    except Exception as exc:
        results.append(ArmResult("dspy-mipro", budget, "failed", error=short_error(exc),
                                 optimize=llm.summary("optimize"), wall_s=sw.laps,
                                 extra={"num_trials": trials, "minibatch_size": minibatch}))
    else:
        results.append(_finish("dspy-mipro", budget, llm, sw, program, task_lm, ctx,
                               {"num_trials": trials, "minibatch_size": minibatch}))

    # --- BootstrapFewShot on at most `budget` training items -------------------------------------
    llm = MeteredLLM(_client_for(ctx))
    task_lm, _ = _lms(llm)
    sw = Stopwatch()
    subset = train[: max(1, budget)]
    try:
        with sw.lap("optimize"), llm.phase("optimize"), dspy.context(lm=task_lm):
            tp = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=DEMOS, max_labeled_demos=DEMOS,
                                       max_rounds=1, max_errors=10_000)
            program = tp.compile(_program(instructions), trainset=subset)
    except Exception as exc:
        results.append(ArmResult("dspy-bootstrap", budget, "failed", error=short_error(exc),
                                 optimize=llm.summary("optimize"), wall_s=sw.laps))
    else:
        results.append(_finish("dspy-bootstrap", budget, llm, sw, program, task_lm, ctx,
                               {"train_items_offered": len(subset)}))
    return results
