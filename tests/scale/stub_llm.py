"""A stub OpenAI-compatible chat server for the scale test and benchmark (a test double, 127.0.0.1 only).

    python tests/scale/stub_llm.py --port-file F [--latency-ms 200] [--every-429 N] [--retry-after 0.2]

- ``POST /v1/chat/completions``: after ``latency_ms`` answers with a reply chosen by hashing the request
  (messages + params), so the same request always gets the same answer, whatever process sends it; usage
  counts words. Every ``every_429``-th request (0 = never) is refused with HTTP 429 and ``Retry-After``.
- ``GET /stats``: ``{"requests", "answered", "refused_429", "peak_in_flight", "in_flight", "times"}``
  (``times``: monotonic start time of every answered request, for the request rate; ``spans``: its
  [start, end], for the share of a wall time spent waiting on the model).
- ``POST /reset``: zero the counters.
The chosen port is written to ``--port-file`` once the server listens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPLIES = ["positive", "negative", "neutral", "42", "7", "refund", "billing", "{\"ok\": true}", "yes", "no",
           "I cannot help with that.", "shipping", "3", "account", "technical"]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.answered = 0
        self.refused = 0
        self.in_flight = 0
        self.peak = 0
        self.times: list[float] = []
        self.spans: list[tuple[float, float]] = []


def make_handler(stats: Stats, latency_s: float, every_429: int, retry_after: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/stats":
                with stats.lock:
                    body = {"requests": stats.requests, "answered": stats.answered, "refused_429": stats.refused,
                            "peak_in_flight": stats.peak, "in_flight": stats.in_flight, "times": list(stats.times),
                            "spans": list(stats.spans)}
                self._send(200, body)
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.rstrip("/") == "/reset":
                with stats.lock:
                    stats.reset()
                self._send(200, {"ok": True})
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": "not found"})
                return
            try:
                req = json.loads(raw)
                messages = req["messages"]
            except (ValueError, KeyError, TypeError):
                self._send(400, {"error": {"message": "body must be JSON with messages"}})
                return
            with stats.lock:
                stats.requests += 1
                n = stats.requests
                refuse = every_429 > 0 and n % every_429 == 0
                if refuse:
                    stats.refused += 1
                else:
                    stats.in_flight += 1
                    stats.peak = max(stats.peak, stats.in_flight)
                    stats.times.append(time.monotonic())
            if refuse:
                self._send(429, {"error": {"message": "rate limited (stub)"}}, {"Retry-After": f"{retry_after:g}"})
                return
            t0 = time.monotonic()
            try:
                time.sleep(latency_s)
                key = json.dumps({"m": messages, "t": req.get("temperature"), "x": req.get("max_tokens"),
                                  "s": req.get("stop")}, sort_keys=True)
                h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
                text = REPLIES[h % len(REPLIES)]
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
                body = {
                    "id": f"stub-{h % 10**12}", "object": "chat.completion", "model": req.get("model", "stub"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                              "total_tokens": prompt_tokens + len(text.split())},
                }
                self._send(200, body)
            finally:
                with stats.lock:
                    stats.in_flight -= 1
                    stats.answered += 1
                    stats.spans.append((t0, time.monotonic()))

    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--every-429", type=int, default=0)
    p.add_argument("--retry-after", type=float, default=0.2)
    a = p.parse_args()
    stats = Stats()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(stats, a.latency_ms / 1000, a.every_429,
                                                                     a.retry_after))
    server.daemon_threads = True
    tmp = Path(a.port_file + ".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.rename(a.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
