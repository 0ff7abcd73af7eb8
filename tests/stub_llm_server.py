"""A STUB OpenAI-compatible server for tests (not a model): ``POST /v1/chat/completions`` on 127.0.0.1.

It answers from a script of actions, one per request, then from ``default``; every request is recorded
(path, headers, JSON body) and an in-flight counter keeps the peak number of requests served at once.
The default answer is deterministic: ``echo: <last user message>`` with usage counted as characters/4.

Actions (dicts): ``{"status": 429, "headers": {...}, "body": bytes|str|dict, "delay": s}``, ``{"hang": True}``
(hold the request open until the server stops), ``{"reply": "text"}`` (a well-formed 200 with that text).

    with StubLLMServer(script=[{"status": 429, "headers": {"Retry-After": "0.1"}}]) as stub:
        stub.base_url  # http://127.0.0.1:PORT/v1

As a process (for multi-process tests): ``python -m tests.stub_llm_server --latency 0.2 --fail-every 10``
prints ``port N`` once listening, serves until SIGTERM/SIGINT; ``GET /stats`` returns the counters.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion_body(text: str, prompt_tokens: int = 3, completion_tokens: int = 2, model: str = "stub") -> dict:
    return {
        "id": "stub-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default listen backlog of 5 resets connections under 16+ concurrent clients
    daemon_threads = True


class StubLLMServer:
    def __init__(self, script: list[dict] | None = None, default: dict | None = None, latency_s: float = 0.0,
                 port: int = 0, fail_every: int = 0, die_after: int | None = None):
        self.script = list(script or [])
        self.die_after = die_after  # after this many requests the server dies (connections refused)
        self._dead = False
        self.fail_every = fail_every  # every n-th request answers 429 with Retry-After (0 = never)
        self.statuses: dict[int, int] = {}
        self.default = default or {}
        self.latency_s = latency_s
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body writes

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path.rstrip("/") == "/stats":  # counters, for a test driving the stub in another process
                    with stub._lock:
                        stats = {"requests": stub.chat_requests, "in_flight": stub.in_flight,
                                 "peak_in_flight": stub.peak_in_flight, "statuses": dict(stub.statuses)}
                    self._answer({"status": 200, "body": stats})
                elif self.path.rstrip("/") == "/v1/models":
                    self._answer({"status": 200, "body": {"object": "list", "data": [{"id": "stub-model"}]}})
                else:
                    self._answer({"status": 404, "body": {"error": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with stub._lock:
                    stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    action = stub.script.pop(0) if stub.script else stub.default
                    dying = stub.die_after is not None and len(stub.requests) > stub.die_after
                    if stub.fail_every and len(stub.requests) % stub.fail_every == 0 and not action:
                        action = {"status": 429, "headers": {"Retry-After": "0.05"}, "body": {"error": "slow down"}}
                    stub.in_flight += 1
                    stub.peak_in_flight = max(stub.peak_in_flight, stub.in_flight)
                if dying:  # the server "dies": this connection closes unanswered, the listener goes away
                    self.close_connection = True
                    stub._die()
                    with stub._lock:
                        stub.in_flight -= 1
                    return
                try:
                    if stub.latency_s:
                        time.sleep(stub.latency_s)
                    if action.get("hang"):
                        stub._stop.wait(60)
                        return
                    if action.get("delay"):
                        time.sleep(action["delay"])
                    if "status" not in action:
                        user = [m["content"] for m in (body or {}).get("messages", []) if m.get("role") == "user"]
                        text = action.get("reply", f"echo: {user[-1] if user else ''}")
                        chars = sum(len(m.get("content", "")) for m in (body or {}).get("messages", []))
                        action = {"status": 200, "body": completion_body(text, chars // 4 + 1, len(text) // 4 + 1)}
                    self._answer(action)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _answer(self, action: dict) -> None:
                with stub._lock:
                    stub.statuses[action["status"]] = stub.statuses.get(action["status"], 0) + 1
                payload = action.get("body", b"")
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                self.send_response(action["status"])
                for k, v in (action.get("headers") or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="stub-llm-server", daemon=True)

    def __enter__(self) -> StubLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _die(self) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
        threading.Thread(target=self._close_listener, daemon=True).start()

    def _close_listener(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            dead, self._dead = self._dead, True
        if not dead:
            self._close_listener()
        self._thread.join(timeout=5)

    @property
    def chat_requests(self) -> int:
        return sum(1 for r in self.requests if r["path"].endswith("/chat/completions"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="a STUB OpenAI-compatible server on 127.0.0.1 (tests only)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    p.add_argument("--fail-every", type=int, default=0, help="every n-th request answers 429 + Retry-After")
    args = p.parse_args(argv)
    stub = StubLLMServer(latency_s=args.latency, port=args.port, fail_every=args.fail_every)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with stub:
        print(f"port {stub.port}", flush=True)
        done.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
