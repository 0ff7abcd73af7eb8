"""orchestration/progress.py in plain-lines mode (a piped console): a line when the step or the candidate
changes, the LLM-call counter at most once per ``lines_every_s``, and the final state always."""

from __future__ import annotations

import io

from orchestration.progress import RunProgress, State


def _state(step: int, cand: int, calls: int) -> State:
    return State(steps_done=step, steps_total=6, running="experiment_results", candidates_done=cand,
                 candidates_total=8, llm_calls=calls, llm_new=calls)


def test_plain_lines_follow_steps_and_candidates_not_every_llm_call(monkeypatch):
    monkeypatch.setenv("GENEPOOL_PROGRESS", "lines")
    out = io.StringIO()
    progress = RunProgress(instance=None, run_id="r", steps=6, out=out, lines_every_s=3600)  # type: ignore[arg-type]
    states = ([_state(3, 0, c) for c in range(1, 40)] + [_state(3, 1, 41)]
              + [_state(3, 1, c) for c in range(42, 60)] + [_state(4, 1, 61)])
    current = {"s": _state(3, 0, 0)}
    monkeypatch.setattr(progress, "snapshot", lambda: current["s"])
    for s in states:
        current["s"] = s
        progress._tick()
    current["s"] = _state(6, 8, 99)
    progress._tick(final=True)
    lines = out.getvalue().splitlines()
    # 59 snapshots with new LLM-call counts: one line for the first, one per candidate or step change, and the end
    assert [line.split(" · ")[1:3] for line in lines] == [
        ["candidates 0/8", "1 LLM calls (1 new)"], ["candidates 1/8", "41 LLM calls (41 new)"],
        ["candidates 1/8", "61 LLM calls (61 new)"], ["candidates 8/8", "99 LLM calls (99 new)"]]
    # with a short interval the call counter shows up again between changes
    out2 = io.StringIO()
    fast = RunProgress(instance=None, run_id="r", steps=6, out=out2, lines_every_s=0)  # type: ignore[arg-type]
    monkeypatch.setattr(fast, "snapshot", lambda: current["s"])
    for c in range(1, 6):
        current["s"] = _state(3, 0, c)
        fast._tick()
    assert len(out2.getvalue().splitlines()) == 5
