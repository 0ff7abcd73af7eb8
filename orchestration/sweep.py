"""No run is left STARTED: mark runs whose process is gone as failed, and record them.

A run executed in process (the CLI) or by the default run launcher lives in one process on this machine;
every event it writes carries that process's pid. If the process was killed (SIGKILL, OOM, a reboot),
nothing ever reports the run as ended: it stays STARTED, and the threshold sensor would wait for it for
ever. ``sweep_dead_runs`` finds such runs (status STARTING/STARTED/CANCELING, the pid of their latest
event no longer alive on this host, or alive but started after the run, i.e. a reused pid), reports them
failed to Dagster with a one-line reason and records them in ``genepool.run_failures``.

It runs when the CLI starts a generation and on each tick of the metric-threshold sensor. Runs launched
on other machines (a Celery run launcher) are left to Dagster's run monitoring (enabled in the generated
dagster.yaml): a pid means nothing across hosts. Runs are tagged with the launching host
(``genepool/host``) when genepool starts them; a run whose tag names another host is never swept.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

HOST_TAG = "genepool/host"
SWEEP_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
_LOCAL_LAUNCHERS = {"DefaultRunLauncher", "SyncInMemoryRunLauncher"}


@dataclass(frozen=True)
class SweptRun:
    run_id: str
    job_name: str
    partition_key: str | None
    pid: int
    reason: str


def host_tags() -> dict[str, str]:
    """Tags for a run genepool starts on this machine (lets the sweep tell local runs from remote ones)."""
    return {HOST_TAG: socket.gethostname()}


def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of a live process from /proc, or None when unknown (non-Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat; [0] here is field 3 (state)
        with open("/proc/stat", "rb") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith(b"btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_gone(pid: int, run_started: float | None) -> str | None:
    """Why the run's process is gone, or None if it is (probably) still alive."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its process (pid {pid}) is gone"
    except PermissionError:
        return None  # alive, another user's
    started = _process_start(pid)
    if started is not None and run_started is not None and started > run_started + 2.0:
        return f"its process (pid {pid}) is gone (the pid now belongs to a process started after the run)"
    return None


def _last_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    records = instance.get_records_for_run(run_id, limit=20, ascending=False).records
    for rec in records:
        ev = rec.event_log_entry.dagster_event
        if ev is not None and ev.pid:
            return int(ev.pid)
    return None


def sweep_dead_runs(instance: dg.DagsterInstance, db=None, *, log=None) -> list[SweptRun]:
    """Report failed every local run whose process is gone; record it in genepool.run_failures (when ``db``)."""
    launcher = type(instance.run_launcher).__name__ if instance.run_launcher is not None else "DefaultRunLauncher"
    if launcher not in _LOCAL_LAUNCHERS:
        return []  # remote run workers: Dagster's run monitoring covers them
    host = socket.gethostname()
    swept: list[SweptRun] = []
    for rec in instance.get_run_records(filters=dg.RunsFilter(statuses=SWEEP_STATUSES), limit=200):
        run = rec.dagster_run
        if run.tags.get(HOST_TAG, host) != host:
            continue
        pid = _last_pid(instance, run.run_id)
        if pid is None:
            continue  # not started yet (no event): run monitoring's start timeout covers it
        started = rec.start_time or (rec.create_timestamp.timestamp() if rec.create_timestamp else None)
        why = process_gone(pid, started)
        if why is None:
            continue
        reason = f"run left {run.status.value} but {why}: marked failed by genepool's sweep"
        fresh = instance.get_run_by_id(run.run_id)
        if fresh is None or fresh.status not in SWEEP_STATUSES:
            continue  # it ended meanwhile
        instance.report_run_failed(fresh, message=reason)
        from assets.partitions import library_key_of_tags  # the library's key of an agent × generation run

        item = SweptRun(run.run_id, run.job_name, library_key_of_tags(run.tags) or run.tags.get("dagster/partition"),
                        pid, reason)
        swept.append(item)
        if db is not None:
            record_swept(db, item)
        if log is not None:
            log.warning(f"run {run.run_id[:8]} ({run.job_name}, {item.partition_key or 'no partition'}): {reason}")
    return swept


def record_swept(db, item: SweptRun) -> None:
    agent = None
    if item.partition_key:
        try:
            from assets.partitions import parse_partition_key

            agent = parse_partition_key(item.partition_key)[0]
        except ValueError:
            agent = None
    db.execute(
        "INSERT INTO genepool.run_failures (run_id, job_name, partition_key, agent_type, error, failed_steps,"
        " failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
        (item.run_id, item.job_name, item.partition_key, agent, item.reason, [], datetime.now(UTC)),
    )
