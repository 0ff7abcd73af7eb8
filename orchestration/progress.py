"""The progress of a generation the CLI runs in process: a bar on a terminal, plain lines otherwise.

While ``execute_in_process`` works, a background thread reads

- the run's own event log: which of the generation's asset steps (6) finished, which one is running;
- genepool.generation_spend of the partition: rollouts spent, against the budget (``max_rollouts``);
- genepool.llm_calls of the partition: LLM calls answered, and how many were new (not from the cache);

and a logging handler on the library's ``genepool`` logger takes its per-candidate progress records
("candidate n of N: s/m solved"), which give the candidates evaluated and the success so far. No library
change is needed: the run writes these rows and records anyway.

On a terminal this is a ``rich`` progress display (steps, candidates and rollouts as bars, success and LLM
calls as text), redrawn in place. When stdout is not a terminal (CI, ``make demo | tee``) every change is one
plain line: ``  [steps 3/6] experiment_results · candidates 2/4 · rollouts 30/300 · success so far 45% ·
42 LLM calls (17 new) · 95 s``. ``GENEPOOL_PROGRESS=bar`` or ``=lines`` forces one mode.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

_STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
MODE_ENV = "GENEPOOL_PROGRESS"
# the library's per-candidate record (genepool/steps/experiments.py), matched on its format string
_CANDIDATE_MSG = "%s: candidate %d of %d"


@dataclass(frozen=True)
class State:
    steps_done: int
    steps_total: int
    running: str
    candidates_done: int = 0
    candidates_total: int | None = None
    solved: int = 0
    tried: int = 0
    rollouts: int | None = None
    budget: int | None = None
    llm_calls: int | None = None
    llm_new: int | None = None

    @property
    def success(self) -> float | None:
        return self.solved / self.tried if self.tried else None

    def line(self) -> str:
        parts = [f"  [steps {self.steps_done}/{self.steps_total}] {self.running}"]
        if self.candidates_total is not None:
            parts.append(f"candidates {self.candidates_done}/{self.candidates_total}")
        if self.rollouts is not None:
            parts.append(f"rollouts {self.rollouts}/{self.budget if self.budget is not None else '∞'}")
        if self.success is not None:
            parts.append(f"success so far {self.success:.0%}")
        if self.llm_calls is not None:
            parts.append(f"{self.llm_calls} LLM calls ({self.llm_new} new)")
        return " · ".join(parts)


class _CandidateRecords(logging.Handler):
    """Collects the library's per-candidate progress: (n, N, solved, evaluated) of the partition."""

    def __init__(self, library_key: str | None):
        super().__init__(logging.INFO)
        self.key = library_key
        self.done, self.total, self.solved, self.tried = 0, None, 0, 0
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith(_CANDIDATE_MSG) or not isinstance(record.args, tuple):
            return
        try:
            key, n, total, _pid, solved, tried = record.args[:6]
        except ValueError:
            return
        if (self.key and key != self.key) or n in self._seen:
            return
        self._seen.add(n)
        self.done, self.total = max(self.done, int(n)), int(total)
        self.solved, self.tried = self.solved + int(solved), self.tried + int(tried)


def _mode(out: Any) -> str:
    forced = os.environ.get(MODE_ENV, "").strip().lower()
    if forced in ("bar", "lines"):
        return forced
    return "bar" if hasattr(out, "isatty") and out.isatty() else "lines"


class RunProgress:
    """``with RunProgress(instance, run_id, steps, db, key, budget): job.execute_in_process(run_id=...)``

    ``steps`` are the step keys counted as the generation's steps (its six assets; the checks' steps are not).
    """

    def __init__(self, instance: dg.DagsterInstance, run_id: str, steps: Sequence[str] | int, db: Any = None,
                 partition_key: str | None = None, budget: int | None = None, interval_s: float = 1.0,
                 out: Any = None, lines_every_s: float = 15.0):
        self.instance, self.run_id, self.db, self.key, self.budget = instance, run_id, db, partition_key, budget
        self.steps = set(steps) if not isinstance(steps, int) else None
        self.total = len(self.steps) if self.steps is not None else int(steps)  # type: ignore[arg-type]
        self.interval_s = interval_s
        self.out = out or sys.stdout
        self.mode = _mode(self.out)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="genepool-progress", daemon=True)
        self._last = ""
        self._t0 = time.monotonic()
        # plain lines: one when the step or the candidate changes, otherwise (LLM calls ticking) at most one per
        # ``lines_every_s``, so a piped console (CI, `make demo | tee`) gets dozens of lines, not one per call
        self.lines_every_s = lines_every_s
        self._last_key: tuple = ()
        self._last_emit = float("-inf")
        self._records = _CandidateRecords(partition_key)
        self._logger = logging.getLogger("genepool")
        self._old_level = self._logger.level
        self._bar: Any = None
        self.lines: list[str] = []
        self.states: list[State] = []

    def snapshot(self) -> State:
        recs = self.instance.get_records_for_run(self.run_id, of_type=_STEP_EVENTS, limit=1000).records
        started, done = [], set()
        for r in recs:
            ev = r.event_log_entry.dagster_event
            if self.steps is not None and ev.step_key not in self.steps:
                continue
            if ev.event_type == dg.DagsterEventType.STEP_START:
                started.append(ev.step_key)
            else:
                done.add(ev.step_key)
        running = [s for s in started if s not in done]
        what = running[-1] if running else ("starting" if not done else "finishing")
        rollouts = calls = new = None
        if self.db is not None and self.key:
            from genepool.store import generation_spend

            rollouts = generation_spend(self.db, self.key).rollouts
            row = self.db.fetchone(
                "SELECT count(*) AS n, count(*) FILTER (WHERE NOT cached) AS live FROM genepool.llm_calls"
                " WHERE partition_key = %s", (self.key,))
            calls, new = int(row["n"]), int(row["live"])
        c = self._records
        return State(min(len(done), self.total), self.total, what, c.done, c.total, c.solved, c.tried, rollouts,
                     self.budget, calls, new)

    # --- display -----------------------------------------------------------------------------------------
    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.out, force_terminal=True)
        self._bar = Progress(
            TextColumn("  {task.description:<10}"), BarColumn(bar_width=30), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
            console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False,
        )
        self._tasks = {
            "steps": self._bar.add_task("steps", total=self.total, note=""),
            "candidates": self._bar.add_task("candidates", total=None, note=""),
            "rollouts": self._bar.add_task("rollouts", total=self.budget, note=""),
        }
        self._bar.start()

    def _draw_bar(self, s: State) -> None:
        bar, t = self._bar, self._tasks
        bar.update(t["steps"], completed=s.steps_done, note=s.running)
        bar.update(t["candidates"], completed=s.candidates_done, total=s.candidates_total,
                   note="" if s.success is None else f"success so far {s.success:.0%} ({s.solved}/{s.tried})")
        calls = "" if s.llm_calls is None else f"{s.llm_calls} LLM calls ({s.llm_new} new)"
        bar.update(t["rollouts"], completed=s.rollouts or 0, total=s.budget, note=calls)
        bar.refresh()

    def _emit(self, state: State) -> None:
        line = state.line()
        self.lines.append(line)
        self.states.append(state)
        if self.mode == "bar":
            self._draw_bar(state)
        else:
            self.out.write(f"{line} · {time.monotonic() - self._t0:.0f} s\n")
            self.out.flush()

    def _tick(self, final: bool = False) -> None:
        try:
            state = self.snapshot()
        except Exception:  # progress is best effort: never break the run for a display
            return
        line = state.line()
        if line == self._last:
            return
        key = (state.steps_done, state.running, state.candidates_done, state.candidates_total)
        now = time.monotonic()
        if self.mode != "bar" and not final and key == self._last_key and now - self._last_emit < self.lines_every_s:
            return
        self._last, self._last_key, self._last_emit = line, key, now
        self._emit(state)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def __enter__(self) -> RunProgress:
        self._logger.addHandler(self._records)
        if not self._logger.isEnabledFor(logging.INFO):  # the per-candidate records are INFO
            self._logger.setLevel(logging.INFO)
        if self.mode == "bar":
            self._start_bar()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._tick(final=True)  # the final state, also when the run was faster than one interval
        if self._bar is not None:
            self._bar.stop()
        self._logger.removeHandler(self._records)
        self._logger.setLevel(self._old_level)
