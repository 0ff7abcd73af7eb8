"""tests/scale/procs.stop, which the daemon, webserver and scale tests use to stop what they started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.scale.procs import stop

# A leader that exits on SIGINT and a child of it that ignores SIGINT and SIGTERM (as a code server that
# outlives its daemon): both in the leader's own process group.
LEADER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
'''], stdout=open(sys.argv[1], "w"))
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # an exited child not yet reaped by init is not running
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_kills_a_child_that_outlives_its_leader(tmp_path):
    ready = tmp_path / "child.out"
    proc = subprocess.Popen([sys.executable, "-c", LEADER, str(ready)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    child_pid = int(proc.stdout.readline())
    end = time.monotonic() + 20
    while "ready" not in (ready.read_text() if ready.exists() else "") and time.monotonic() < end:
        time.sleep(0.05)
    assert _alive(child_pid)

    stop(proc, timeout=2, first=signal.SIGINT)

    assert proc.returncode is not None
    end = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(child_pid), "the child that ignored SIGINT was left running"
    proc.stdout.close()
