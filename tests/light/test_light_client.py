"""The light agent's urllib transport against a scripted HTTP server: 5xx and 429 are retried (honouring
Retry-After), other 4xx are not and carry the protocol's code, and answers over the size limits or not
JSON are refused instead of being held in memory or guessed at."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fedloom.light import LightClient, ServerRefusal, ServerUnavailable, WireError, encode
from fedloom.light.client import MAX_JSON_BYTES


class Script:
    """Answers to send, in order (status, headers, body), and the paths asked."""

    def __init__(self, *answers):
        self.answers, self.paths = list(answers), []


def serve(script):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            self.script.paths.append(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            status, headers, body = self.script.answers.pop(0)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 - the names http.server calls

        def log_message(self, *args):
            pass

    Handler.script = script
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def scripted():
    servers = []

    def make(*answers):
        script = Script(*answers)
        server = serve(script)
        servers.append(server)
        sleeps = []
        client = LightClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=5, sleep=sleeps.append)
        client.credential = "fla_test"
        return client, script, sleeps

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def error(code, detail="words"):
    return json.dumps({"error": code, "detail": detail}).encode()


def test_5xx_and_429_are_retried_and_retry_after_is_honoured(scripted):
    ok = (200, {}, json.dumps({"state": "wait", "round": 1}).encode())
    client, script, sleeps = scripted(
        (503, {}, error("store_unavailable")), (429, {"Retry-After": "7"}, error("rate_limited")), ok
    )
    assert client.task(0)["state"] == "wait"
    assert len(script.paths) == 3 and sleeps[1] >= 7


def test_a_4xx_is_not_retried_and_carries_the_protocol_code(scripted):
    client, script, _ = scripted((409, {}, error("duplicate", "already have it")))
    with pytest.raises(ServerRefusal) as refused:
        client.upload(b"x")
    assert (refused.value.status, refused.value.code, refused.value.detail) == (409, "duplicate", "already have it")
    assert len(script.paths) == 1


def test_retries_run_out(scripted):
    client, _, _ = scripted(*[(500, {}, b"boom")] * 3)
    client.max_attempts = 3
    with pytest.raises(ServerUnavailable, match="500"):
        client.task(0)


def test_an_answer_that_is_not_json_or_too_big_is_refused(scripted):
    client, _, _ = scripted((200, {}, b"<html>"), (200, {}, b" " * (MAX_JSON_BYTES + 1)))
    with pytest.raises(ServerRefusal, match="not JSON"):
        client.task(0)
    with pytest.raises(ValueError, match="over the limit"):
        client.task(0)


def test_a_model_whose_hash_header_disagrees_is_refused(scripted):
    body = encode({"w": np.ones(3, np.float32)}, {})
    client, _, _ = scripted((200, {"X-Fedloom-Sha256": "0" * 64}, body), (200, {}, body[:-1]))
    with pytest.raises(ValueError, match="X-Fedloom-Sha256 says"):
        client.download(1)
    with pytest.raises(WireError):
        client.download(1)
