"""AggregatorClient: endpoints, error mapping, retries with backoff, TLS with a private CA."""

from __future__ import annotations

import contextlib
import http.server
import json
import random
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedloom.client.tls import TlsHandshakeError
from fedloom.client.transport import (
    AggregatorClient,
    AggregatorError,
    AggregatorUnavailableError,
    AuthError,
    NotFoundError,
    RequestInterruptedError,
    RetryPolicy,
    TaskInfo,
    UploadRejectedError,
    make_ssl_context,
)
from fedloom.core import FitConfig, from_bytes, to_bytes
from fedloom.core.errors import ConfigError, IntegrityError, RejectedUpdateError
from fedloom.core.serialization import content_hash

WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2, dtype=np.float32)}
TASK = {
    "state": "train",
    "round": 3,
    "global_round": 3,
    "global_sha256": "ab" * 32,
    "config": {"round": 3, "epochs": 2, "batch_size": 16, "lr": 0.05, "seed": 7, "extra": {"mu": 0.1}},
    "deadline": None,
}


class Recorder:
    """A MockTransport handler that answers from a script and remembers every request."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def make_client(
    handler: Recorder, delays: list[float] | None = None, rng: random.Random | None = None, **retry: Any
) -> AggregatorClient:
    retry.setdefault("max_attempts", 5)
    client = AggregatorClient(
        "http://agg.test/",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(**retry),
        sleep=(delays.append if delays is not None else lambda _: None),
        rng=rng,
    )
    client.authenticate("agent-1", "fla_secret")
    return client


def error(status: int, code: str, detail: str = "what went wrong") -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": detail})


class UpperBound(random.Random):
    """An rng whose 'uniform' always picks the top of the range, to read the backoff caps."""

    def uniform(self, a: float, b: float) -> float:
        return b


# --------------------------------------------------------------------- endpoints


def test_register_then_every_call_carries_the_credential() -> None:
    handler = Recorder(
        httpx.Response(200, json={"agent_id": "a1", "credential": "fla_x", "role": "agent", "run_id": "r"}),
        httpx.Response(200, json=TASK),
    )
    client = AggregatorClient("http://agg.test", transport=httpx.MockTransport(handler))
    registration = client.register("site-a", "flj_token")
    assert registration == {"agent_id": "a1", "credential": "fla_x", "role": "agent", "run_id": "r"}
    assert json.loads(handler.requests[0].content) == {"name": "site-a", "join_token": "flj_token"}
    assert "Authorization" not in handler.requests[0].headers
    client.task()
    assert handler.requests[1].headers["Authorization"] == "Bearer fla_x"


def test_calls_before_authentication_are_refused_locally() -> None:
    handler = Recorder(httpx.Response(200, json=TASK))
    client = AggregatorClient("http://agg.test", transport=httpx.MockTransport(handler))
    with pytest.raises(ConfigError, match="needs a credential"):
        client.task()
    assert handler.requests == []


def test_task_parses_taskinfo_and_long_polls_with_a_longer_read_timeout() -> None:
    handler = Recorder(httpx.Response(200, json=TASK))
    task = make_client(handler).task(wait=30)
    assert task == TaskInfo("train", 3, 3, "ab" * 32, TASK["config"], None)
    assert task.fit_config() == FitConfig(round=3, epochs=2, batch_size=16, lr=0.05, seed=7, extra={"mu": 0.1})
    request = handler.requests[0]
    assert request.url.path == "/v1/task"
    assert request.url.params["wait"] == "30"
    assert request.extensions["timeout"]["read"] > 30


def test_taskinfo_ignores_unknown_config_keys_and_refuses_garbage() -> None:
    task = TaskInfo.from_json({**TASK, "config": {**TASK["config"], "future_knob": 1}})
    assert task.fit_config().epochs == 2
    waiting = TaskInfo.from_json({"state": "wait", "round": 2, "global_round": None, "global_sha256": None})
    assert (waiting.state, waiting.global_round, waiting.config) == ("wait", None, {})
    with pytest.raises(AggregatorError, match="not a TaskInfo"):
        TaskInfo.from_json({"state": "dance"})
    with pytest.raises(AggregatorError, match="bad field"):
        TaskInfo.from_json({**TASK, "round": "three"})


def test_download_global_verifies_the_sha_header() -> None:
    body = to_bytes(WEIGHTS, round=2)
    good = httpx.Response(200, content=body, headers={"X-Fedloom-Sha256": content_hash(WEIGHTS)})
    handler = Recorder(good)
    weights, sha = make_client(handler).download_global(2)
    assert handler.requests[0].url.path == "/v1/models/global/2"
    assert sha == content_hash(WEIGHTS)
    assert np.array_equal(weights["w"], WEIGHTS["w"])

    lying = httpx.Response(200, content=body, headers={"X-Fedloom-Sha256": "00" * 32})
    with pytest.raises(IntegrityError, match="X-Fedloom-Sha256"):
        make_client(Recorder(lying)).download_global("latest")
    with pytest.raises(NotFoundError) as info:
        make_client(Recorder(error(404, "not_found", "no global model yet"))).download_global("latest")
    assert (info.value.status, info.value.code, info.value.detail) == (404, "not_found", "no global model yet")


def test_upload_update_body_follows_the_protocol() -> None:
    handler = Recorder(httpx.Response(200, json={"accepted": True, "round": 4}))
    answer = make_client(handler).upload_update(4, WEIGHTS, 120, {"train_loss": 0.25})
    assert answer == {"accepted": True, "round": 4}
    request = handler.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/updates")
    assert request.headers["Content-Type"] == "application/octet-stream"
    weights, header = from_bytes(request.content)
    assert (header.round, header.client_id, header.num_samples) == (4, "agent-1", 120)
    assert json.loads((header.extra or {})["metrics"]) == {"train_loss": 0.25}
    assert content_hash(weights) == content_hash(WEIGHTS)


def test_upload_initial_and_status() -> None:
    handler = Recorder(httpx.Response(200, json={"accepted": True}), httpx.Response(200, json={"round": 1}))
    client = make_client(handler)
    client.upload_initial(WEIGHTS)
    assert client.status() == {"round": 1}
    assert handler.requests[0].url.path == "/v1/models/initial"
    assert content_hash(from_bytes(handler.requests[0].content)[0]) == content_hash(WEIGHTS)
    assert handler.requests[1].url.path == "/v1/status"


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (409, "duplicate"),
        (409, "wrong_round"),
        (409, "round_closed"),
        (413, "payload_too_large"),
        (422, "invalid_weights"),
    ],
)
def test_upload_refusals_raise_rejected_update_with_the_server_code(status: int, code: str) -> None:
    handler = Recorder(error(status, code, "tensor 'w' has shape (3,)"))
    with pytest.raises(UploadRejectedError) as info:
        make_client(handler).upload_update(1, WEIGHTS, 10)
    assert isinstance(info.value, RejectedUpdateError)
    assert (info.value.status, info.value.code, info.value.detail) == (status, code, "tensor 'w' has shape (3,)")
    assert code in str(info.value)
    assert len(handler.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_raise_auth_error(status: int) -> None:
    with pytest.raises(AuthError) as info:
        make_client(Recorder(error(status, "unauthorized"))).task()
    assert info.value.status == status


def test_a_non_json_error_body_still_gives_a_readable_error() -> None:
    with pytest.raises(AggregatorError) as info:
        make_client(Recorder(httpx.Response(400, text="<html>bad gateway config</html>"))).status()
    assert info.value.code == "http_400"
    assert "bad gateway config" in info.value.detail


# --------------------------------------------------------------------- retries


def test_5xx_is_retried_with_growing_backoff() -> None:
    handler = Recorder(
        error(503, "unavailable"), error(502, "bad_gateway"), error(500, "oops"), httpx.Response(200, json=TASK)
    )
    delays: list[float] = []
    task = make_client(handler, delays, UpperBound(), base_delay=0.5, max_delay=1.5).task()
    assert task.round == 3
    assert len(handler.requests) == 4
    assert delays == [0.5, 1.0, 1.5]  # 0.5 * 2**n, capped at max_delay


def test_connection_errors_are_retried_with_full_jitter_within_bounds() -> None:
    failures: list[Exception] = [httpx.ConnectError("connection refused") for _ in range(8)]
    handler = Recorder(*failures, httpx.Response(200, json=TASK))
    delays: list[float] = []
    policy = {"base_delay": 1.0, "max_delay": 30.0, "max_attempts": 20}
    make_client(handler, delays, random.Random(42), **policy).task()
    assert len(delays) == 8
    caps = [RetryPolicy(**policy).cap(i) for i in range(8)]
    assert caps == [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    assert any(d < cap * 0.9 for d, cap in zip(delays, caps, strict=True))


def test_read_timeouts_and_resets_are_retried() -> None:
    handler = Recorder(httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset"), httpx.Response(200, json=TASK))
    make_client(handler).task()
    assert len(handler.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_4xx_is_never_retried(status: int) -> None:
    handler = Recorder(error(status, "nope"), httpx.Response(200, json=TASK))
    delays: list[float] = []
    with pytest.raises(AggregatorError):
        make_client(handler, delays).upload_update(1, WEIGHTS, 1)
    assert len(handler.requests) == 1
    assert delays == []


def test_giving_up_after_max_attempts_reports_the_last_failure() -> None:
    handler = Recorder(error(503, "overloaded", "try later"))
    delays: list[float] = []
    with pytest.raises(AggregatorUnavailableError) as info:
        make_client(handler, delays, max_attempts=4).task()
    assert len(handler.requests) == 4
    assert len(delays) == 3
    assert (info.value.status, info.value.code, info.value.detail) == (503, "overloaded", "try later")
    with pytest.raises(AggregatorUnavailableError) as info:
        make_client(Recorder(httpx.ConnectError("refused")), max_attempts=1).task()
    assert (info.value.status, info.value.code) == (0, "ConnectError")


def test_retrying_forever_rides_out_a_long_outage() -> None:
    handler = Recorder(*[httpx.ConnectError("down") for _ in range(50)], httpx.Response(200, json=TASK))
    delays: list[float] = []
    make_client(handler, delays, max_attempts=None, base_delay=1.0, max_delay=60.0).task()
    assert len(handler.requests) == 51
    assert max(delays) <= 60.0


def test_interrupt_ends_a_retry_loop() -> None:
    handler = Recorder(httpx.ConnectError("down"))
    client = AggregatorClient(
        "http://agg.test", transport=httpx.MockTransport(handler), retry=RetryPolicy(base_delay=5, max_attempts=None)
    )
    client.authenticate("a", "c")
    threading.Timer(0.2, client.interrupt).start()
    with pytest.raises(RequestInterruptedError):
        client.task()
    assert len(handler.requests) <= 3


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(base_delay=0)
    with pytest.raises(ConfigError):
        RetryPolicy(base_delay=2, max_delay=1)
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="http:// or https://"):
        AggregatorClient("agg.test:8080")


# --------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr.decode()[:200]}")
    return cert, key


@contextlib.contextmanager
def serve_https(self_signed: tuple[Path, Path], hang_ups: int = 0) -> Iterator[str]:
    """A real HTTPS server on 127.0.0.1 answering /v1/health, with the self-signed certificate;
    the first ``hang_ups`` requests get no answer (the connection is just closed)."""
    left = {"hang_ups": hang_ups}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if left["hang_ups"] > 0:
                left["hang_ups"] -= 1
                self.close_connection = True
                return
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(self_signed[0], self_signed[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def https_server(self_signed: tuple[Path, Path]) -> Iterator[str]:
    with serve_https(self_signed) as url:
        yield url


def test_ca_file_builds_a_verifying_ssl_context(self_signed: tuple[Path, Path]) -> None:
    context = make_ssl_context(self_signed[0])
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert any(
        dict(item[0] for item in ca["subject"]).get("commonName") == "localhost" for ca in context.get_ca_certs()
    )


def test_ca_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        make_ssl_context(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="no usable PEM"):
        make_ssl_context(garbage)
    with pytest.raises(ConfigError):
        AggregatorClient("https://agg.test", ca_file=tmp_path / "missing.pem")


def test_tls_with_the_ca_file_connects_and_without_it_is_refused(
    https_server: str, self_signed: tuple[Path, Path]
) -> None:
    with AggregatorClient(https_server, ca_file=self_signed[0], retry=RetryPolicy(max_attempts=1)) as client:
        assert client.health() is True
    delays: list[float] = []
    with (
        AggregatorClient(https_server, retry=RetryPolicy(max_attempts=None), sleep=delays.append) as client,
        pytest.raises(TlsHandshakeError, match=r"not signed by a CA the agent trusts.*--ca-file"),
    ):
        client.health()  # a configuration problem: raised at once, never retried
    assert delays == []


def test_a_server_that_hangs_up_once_is_a_network_error_retried_not_a_tls_error(
    self_signed: tuple[Path, Path],
) -> None:
    """Over HTTPS a hang-up could be a refused client certificate; the probe tells it apart."""
    delays: list[float] = []
    with (
        serve_https(self_signed, hang_ups=1) as url,
        AggregatorClient(url, ca_file=self_signed[0], retry=RetryPolicy(max_attempts=3), sleep=delays.append) as client,
    ):
        assert client.health() is True
    assert len(delays) == 1  # retried once, as a network error


def test_a_rate_limited_request_waits_as_asked_and_is_sent_again():
    answers = [
        httpx.Response(429, json={"error": "rate_limited", "detail": "slow down"}, headers={"Retry-After": "7"}),
        httpx.Response(200, json={"agent_id": "ag_1", "credential": "fla_x", "role": "agent", "run_id": "r"}),
    ]
    waits: list[float] = []
    client = AggregatorClient(
        "http://aggregator.test",
        transport=httpx.MockTransport(lambda request: answers.pop(0)),
        sleep=waits.append,
    )
    assert client.register("site-a", "token")["agent_id"] == "ag_1"
    assert len(waits) == 1 and 7.0 <= waits[0] <= 300.0  # the Retry-After, not a quick retry


def test_a_refusal_that_means_never_is_not_retried():
    calls: list[int] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(409, json={"error": "name_taken", "detail": "another token's name"})

    client = AggregatorClient("http://aggregator.test", transport=httpx.MockTransport(refuse), sleep=lambda _s: None)
    with pytest.raises(AggregatorError, match=r"another token"):
        client.register("site-a", "token")
    assert calls == [1]
