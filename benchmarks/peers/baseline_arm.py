"""Baseline arm: the agent's seed prompt, unchanged, on the held-out test split (no rollouts)."""

from __future__ import annotations

from benchmarks.peers.common import ArmContext, ArmResult, Stopwatch, evaluate_genome


def run(ctx: ArmContext) -> ArmResult:
    llm = ctx.metered()
    sw = Stopwatch()
    with sw.lap("test"):
        test = evaluate_genome(llm, ctx.test, ctx.seed_genome, purpose="bench:baseline:test")
    return ArmResult(
        arm="baseline",
        budget=None,
        status="ok",
        test=test.to_dict(),
        optimize=llm.summary("optimize"),
        wall_s={"optimize": 0.0, **sw.laps},
        final_prompt=ctx.seed_genome.to_dict(),
        extra={"test_calls": llm.summary("test")},
    )
