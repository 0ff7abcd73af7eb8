"""Processes of the scale test and benchmark: the stub LLM server, redis-server, Celery workers in private mount
namespaces, dagster-daemon. Every process is started here, by pid, and stopped by that pid (its process group)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready within {timeout}s\n{tail}")


def start(argv: list[str], log: Path, env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    fh = open(log, "ab")
    return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env or os.environ.copy(), cwd=cwd,
                            start_new_session=True)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader if it exited: a zombie still counts as a member of its group
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc: subprocess.Popen | None, timeout: float = 20.0, first: int = signal.SIGTERM) -> None:
    """Stop a process we started and its children (its own session/process group), by pid: ``first`` to the
    group, SIGKILL to whatever of it is still running ``timeout`` s later. Waits for the whole group, not only
    its leader, so a child that outlives the leader (e.g. a Dagster code server) is not left behind."""
    if proc is None:
        return
    for sig in (first, signal.SIGKILL):
        if not _group_alive(proc):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while _group_alive(proc) and time.monotonic() < deadline:
            time.sleep(0.2)
    proc.wait(timeout=10)


class StubLLM:
    def __init__(self, folder: Path, latency_ms: float = 200, every_429: int = 0, retry_after: float = 0.2):
        port_file = folder / "stub.port"
        self.proc = start([PY, str(ROOT / "tests/scale/stub_llm.py"), "--port-file", str(port_file),
                           "--latency-ms", str(latency_ms), "--every-429", str(every_429),
                           "--retry-after", str(retry_after)], folder / "stub.log")
        port = wait_for(lambda: port_file.exists() and port_file.read_text(), 20, "stub LLM server", self.proc,
                        folder / "stub.log")
        self.url = f"http://127.0.0.1:{port}/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url.rsplit("/v1", 1)[0] + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.url.rsplit("/v1", 1)[0] + "/reset", data=b"{}", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        stop(self.proc)


def ensure_redis() -> str:
    exe = shutil.which("redis-server")
    if exe:
        return exe
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "redis-server"], check=False, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
        exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed and could not be installed: apt-get install -y redis-server")
    return exe


class Redis:
    def __init__(self, folder: Path):
        self.port = free_port()
        self.proc = start([ensure_redis(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--daemonize", "no", "--dir", str(folder)], folder / "redis.log")

        def ping() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(ping, 20, "redis-server", self.proc, folder / "redis.log")
        self.url = f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.proc)


def in_private_namespace(argv: list[str], local_dir: Path) -> list[str]:
    """argv run in its own mount namespace with a private tmpfs over ``local_dir``: a separate machine's disk."""
    inner = 'mount -t tmpfs -o size=512m genepool-local "$1" && shift && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", inner, "sh", str(local_dir), *argv]
