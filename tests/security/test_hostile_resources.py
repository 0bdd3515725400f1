"""Exhausting a real aggregator: slow bodies, huge bodies and headers, floods of requests, odd
names, and secrets leaking into answers or logs.

Each attack is bounded (a fixed number of requests, sockets closed at the end) and goes
to loopback only.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from security_helpers import Federation, error_code, update_bytes

#: more slow uploads than any sensible number of concurrent upload slots
SLOW_UPLOADS = 16
#: seconds an honest upload may take while slow ones hang
PROMPT_ANSWER_SECONDS = 10.0
#: a request flood: bounded, and far above what any honest agent sends
FLOOD = 300


@contextlib.contextmanager
def _slow_uploads(url: str, credential: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` uploads that declare a 200 kB body, send 16 bytes of it and then hang."""
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    head = (
        f"POST /v1/updates HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {credential}\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 200000\r\n\r\n"
    ).encode()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(head + b"\0" * 16)
            sockets.append(sock)
        time.sleep(0.5)  # let the server start reading every one of them
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_slow_upload_bodies_do_not_block_honest_uploads(federation: Federation) -> None:
    admin, attacker = federation.open_run("site-1")
    with _slow_uploads(federation.url, attacker.credential, SLOW_UPLOADS):
        started = time.monotonic()
        try:
            answer = httpx.post(
                f"{federation.url}/v1/updates",
                content=update_bytes(admin.id, 1),
                headers={**admin.headers, "Content-Type": "application/octet-stream"},
                timeout=PROMPT_ANSWER_SECONDS,
            )
        except httpx.TimeoutException:
            pytest.fail(f"{SLOW_UPLOADS} hanging upload bodies blocked an honest upload for {PROMPT_ANSWER_SECONDS} s")
        took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert took < PROMPT_ANSWER_SECONDS
    assert federation.upload(attacker, update_bytes(attacker.id, 1)).status_code == 200
    federation.wait_for_rounds(1)
    federation.assert_still_works([admin, attacker])


def _post_while_reading(url: str, path: str, headers: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """POST ``chunks`` from a thread while reading the answer, so an early answer is seen.

    A server that refuses a body it has not read may answer and close at once; a client
    that first writes everything could then lose the answer to the reset. Returns
    (status, body) of the answer.
    """
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode())

        def pump() -> None:
            with contextlib.suppress(OSError):
                for chunk in chunks:
                    sock.sendall(chunk)

        threading.Thread(target=pump, name="body-pump", daemon=True).start()
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                pytest.fail(f"the connection closed without an answer (got {answer[:200]!r})")
            answer += data
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(
            next((h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
        )
        while len(body) < length and (data := sock.recv(65536)):
            body += data
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_huge_registration_body_is_413(federation: Federation, framing: str) -> None:
    federation.open_run()
    body = b'{"name": "site-x", "join_token": "' + b"A" * (1 << 20) + b'"}'  # 1 MiB
    slices = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    if framing == "content-length":
        headers, chunks = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n", slices
    else:
        headers = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        chunks = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in slices] + [b"0\r\n\r\n"]
    try:
        status, answer = _post_while_reading(federation.url, "/v1/agents/register", headers, chunks)
    except OSError as exc:
        pytest.fail(f"the connection broke instead of a 413 answer: {exc!r}")
    refusal = json.loads(answer) if answer.startswith(b"{") else {}
    assert (status, refusal.get("error")) == (413, "payload_too_large"), (status, answer[:300])
    federation.assert_still_works()


def _flood(federation: Federation, send: str) -> list[httpx.Response]:
    """Up to FLOOD requests of one kind, stopping at the first 429."""
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=federation.url, timeout=30) as client:
        for i in range(FLOOD):
            if send == "bad_token":
                answer = client.post("/v1/agents/register", json={"name": "guess", "join_token": f"flj_guess{i}"})
            else:
                answer = client.get("/v1/status", headers={"Authorization": f"Bearer fla_guess{i}"})
            answers.append(answer)
            if answer.status_code == 429:
                break
    return answers


@pytest.mark.parametrize("send", ["bad_token", "bad_credential"])
def test_guessing_tokens_and_credentials_is_rate_limited(federation: Federation, send: str) -> None:
    (admin,) = federation.open_run()
    answers = _flood(federation, send)
    codes = [a.status_code for a in answers]
    assert codes[-1] == 429, f"{len(codes)} guesses in a row were all answered ({sorted(set(codes))}), none limited"
    assert error_code(answers[-1]) == (429, "rate_limited")
    assert all(code in (401, 422, 429) for code in codes), sorted(set(codes))
    federation.wait_out_rate_limit(admin)
    federation.assert_still_works()


def test_huge_request_headers_are_refused_without_a_server_error(federation: Federation) -> None:
    federation.open_run()
    answers: dict[int, int | str] = {}
    for size in (64 * 1024, 1024 * 1024):
        try:
            answer = httpx.get(
                f"{federation.url}/v1/status", headers={"Authorization": "Bearer " + "x" * size}, timeout=30
            )
            answers[size] = answer.status_code
        except httpx.TransportError:
            answers[size] = "closed"  # closing the connection on an oversized header is a refusal too
    assert all(a == "closed" or 400 <= int(a) < 500 for a in answers.values()), answers
    assert federation.get("/v1/health").status_code == 200
    federation.assert_still_works()


#: names that could climb out of a directory, hide in a log line or pose as another site
NOT_SLUGS = [
    "../../etc/passwd",
    "..%2F..%2Fx",
    "a/b",
    "a\\b",
    "site-a\x00",
    "site a",
    "x" * 65,
    "",
    "\uff53\uff49\uff54\uff45",
]


def test_agent_names_that_are_not_slugs_are_refused(federation: Federation) -> None:
    federation.open_run()
    token = federation.issue_tokens("site-x")["site-x"]
    wrong = {}
    for name in NOT_SLUGS:
        answer = federation.register(name, token)
        if answer.status_code != 422 or error_code(answer)[1] != "invalid_request" or "name" not in answer.text:
            wrong[name] = (answer.status_code, answer.text[:100])
    assert not wrong, f"names not refused with 422 invalid_request: {wrong}"
    assert federation.status()["agents"] == 1
    federation.assert_still_works()


#: long-poll waits that are not a number of seconds from 0 to 60
ODD_WAITS = ["nan", "NaN", "inf", "-inf", "-1", "1e309", "61", "0x10", ""]


def test_odd_long_poll_waits_are_422(federation: Federation) -> None:
    """A NaN or infinite wait must not reach the long-poll timer (it could hang a worker or never answer)."""
    (admin,) = federation.open_run()
    wrong = {}
    for wait in ODD_WAITS:
        answer = federation.get(f"/v1/task?wait={wait}", admin.credential)
        if answer.status_code != 422 or error_code(answer)[1] != "invalid_request":
            wrong[wait] = (answer.status_code, answer.text[:100])
    assert not wrong, f"waits not refused with 422: {wrong}"
    federation.assert_still_works()


def test_secrets_never_appear_in_answers_or_logs(federation: Federation) -> None:
    (admin,) = federation.open_run()
    good_token = federation.issue_tokens("site-1")["site-1"]
    wrong_token = "flj_" + "S3cretGuess" * 4
    wrong_credential = "fla_" + "Cr3dGuess" * 5
    answers = [
        federation.register("site-1", wrong_token),
        federation.get("/v1/status", wrong_credential),
        federation.post("/v1/updates", b"garbage", admin.credential),
        federation.register("bad name", good_token),
    ]
    registered = federation.register("site-1", good_token)
    assert registered.status_code == 200
    secrets = [wrong_token, wrong_credential, good_token, admin.credential, registered.json()["credential"]]
    for answer in answers:
        assert answer.status_code >= 400
        for secret in secrets:
            assert secret not in answer.text, f"an error answer repeats a secret: {answer.text[:300]}"
    federation.stop()  # flush every log line
    log = (federation.home / "aggregator.log").read_text()
    leaked = [s[:8] + "…" for s in secrets if s in log]
    assert not leaked, f"the aggregator's log holds secrets: {leaked}"
