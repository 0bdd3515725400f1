"""A compromised aggregator on loopback, for the agent's side of the threat model.

It answers registration and task polls like a real one (docs/protocol.md), selecting the
agent for round 1, and then misbehaves on ``GET /v1/models/global/…`` in the way a
test picks: an endless body, or a model whose hash never matches the task's. It counts
what the agent asked for and how many bytes it managed to push, and it stops pushing
at a fixed cap, so an agent without a limit costs the test a bounded amount of memory.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fedloom.core import to_bytes

#: what an unbounded agent would read before this server gives up pushing; above the
#: 512 MiB a bounded agent may allow itself, well below what would hurt the test machine
PUSH_CAP_BYTES = 768 << 20
_CHUNK = 1 << 20


class HostileAggregator:
    """``mode``: ``"endless"`` (a body that never ends), ``"wrong_hash"`` (a valid model, never the task's)."""

    def __init__(self, mode: str, model: dict[str, Any]) -> None:
        self.mode = mode
        self.payload = to_bytes(model, round=0)
        self.downloads = 0
        #: bytes pushed into each finished endless download, in order
        self.pushed: list[int] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostile-aggregator", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> HostileAggregator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                answer = {"agent_id": "ag_victim", "credential": "fla_" + "v" * 43, "role": "agent", "run_id": "r1"}
                self._json(answer)

            def do_GET(self) -> None:
                if self.path.startswith("/v1/task"):
                    self._json(hostile.task())
                elif self.path.startswith("/v1/models/global/"):
                    with hostile.lock:
                        hostile.downloads += 1
                    hostile.serve_model(self)
                else:
                    self._json({"ok": True})

            def _json(self, data: dict[str, Any]) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def task(self) -> dict[str, Any]:
        config = {"round": 1, "epochs": 1, "batch_size": 16, "lr": 0.1, "seed": 1, "extra": {}}
        never = "0" * 64  # no model hashes to this
        return {"state": "train", "round": 1, "global_round": 1, "global_sha256": never, "config": config}

    def serve_model(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "wrong_hash":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(self.payload)))
            handler.end_headers()
            handler.wfile.write(self.payload)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(64 * PUSH_CAP_BYTES))  # a claim it never has to keep
        handler.end_headers()
        pushed = 0
        try:
            while pushed < PUSH_CAP_BYTES:
                handler.wfile.write(b"\0" * _CHUNK)
                pushed += _CHUNK
        except OSError:  # the agent hung up: what a bounded reader does
            pass
        handler.close_connection = True
        with self.lock:
            self.pushed.append(pushed)
