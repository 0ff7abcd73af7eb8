"""A progress line for runs the CLI executes in process.

While ``execute_in_process`` works, a background thread reads the run's own event log (steps started and
finished) and genepool.llm_calls of the partition (answered and new LLM calls), and prints one line when
something changed: ``[3/10] experiment_results · 42 LLM calls (17 new) · 95 s``. On a terminal the line
is rewritten in place; in a log or CI every change is a new line. No library change is needed: the run
writes these rows anyway.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import dagster as dg

_STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}


class RunProgress:
    """``with RunProgress(instance, run_id, total_steps, db, partition_key): job.execute_in_process(run_id=...)``"""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, total_steps: int, db: Any = None,
                 partition_key: str | None = None, interval_s: float = 2.0, out=None):
        self.instance, self.run_id, self.total, self.db, self.key = instance, run_id, total_steps, db, partition_key
        self.interval_s = interval_s
        self.out = out or sys.stdout
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="genepool-progress", daemon=True)
        self._last = ""
        self._t0 = time.monotonic()
        self.lines: list[str] = []

    def snapshot(self) -> str:
        recs = self.instance.get_records_for_run(self.run_id, of_type=_STEP_EVENTS, limit=1000).records
        started, done = [], set()
        for r in recs:
            ev = r.event_log_entry.dagster_event
            if ev.event_type == dg.DagsterEventType.STEP_START:
                started.append(ev.step_key)
            else:
                done.add(ev.step_key)
        running = [s for s in started if s not in done]
        line = f"  [{len(done)}/{self.total}] {running[-1] if running else ('starting' if not done else 'finishing')}"
        if self.db is not None and self.key:
            row = self.db.fetchone(
                "SELECT count(*) AS n, count(*) FILTER (WHERE NOT cached) AS live FROM genepool.llm_calls"
                " WHERE partition_key = %s", (self.key,))
            line += f" · {row['n']} LLM calls ({row['live']} new)"
        return line

    def _emit(self, line: str) -> None:
        shown = f"{line} · {time.monotonic() - self._t0:.0f} s"
        self.lines.append(line)
        if self.tty:
            self.out.write("\r" + shown.ljust(100)[:120])
        else:
            self.out.write(shown + "\n")
        self.out.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                line = self.snapshot()
            except Exception:  # progress is best effort: never break the run for a display
                continue
            if line != self._last:
                self._last = line
                self._emit(line)

    def __enter__(self) -> RunProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:  # the final state, also when the run was faster than one interval
            line = self.snapshot()
        except Exception:
            line = self._last
        if line != self._last:
            self._last = line
            self._emit(line)
        if self.tty:
            self.out.write("\n")
            self.out.flush()
