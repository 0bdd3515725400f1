"""Item: stalled upload bodies from one agent must not block anyone else's upload.

Real sockets: a uvicorn server on 127.0.0.1 in a thread, and httpx clients that stream
bodies from generators which sleep (a stalled link), each bounded by a stop event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from aggregator_helpers import payload
from live_server import serving

from fedloom.server.app import create_app

OCTET = "application/octet-stream"


def register(url, store, name):
    token = store.create_token(name)
    answer = httpx.post(f"{url}/v1/agents/register", json={"name": name, "join_token": token}, timeout=10).json()
    return answer["agent_id"], {"Authorization": f"Bearer {answer['credential']}", "Content-Type": OCTET}


def stalled_body(start: bytes, stop: threading.Event) -> Iterator[bytes]:
    """Send the first bytes of an upload, then nothing until ``stop`` is set (a stalled link)."""
    yield start
    while not stop.wait(0.05):
        pass


class StalledUploads:
    """``count`` uploads whose bodies stall, each in its own thread; ``answers`` collects status codes."""

    def __init__(self, url, headers, body, count):
        self.stop = threading.Event()
        self.answers: list[object] = []
        self.threads = [
            threading.Thread(target=self._send, args=(url, headers, body), daemon=True) for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _send(self, url, headers, body):
        try:
            with httpx.Client(timeout=httpx.Timeout(15.0)) as client:
                response = client.post(
                    f"{url}/v1/updates", content=stalled_body(body[:100], self.stop), headers=headers
                )
                self.answers.append((response.status_code, response.json().get("error")))
        except httpx.HTTPError as exc:
            self.answers.append(type(exc).__name__)

    def finish(self, timeout=15.0):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)


@pytest.mark.parametrize("attacker_selected", [True, False])
def test_stalled_bodies_from_one_agent_do_not_block_the_others(make_aggregator, store, attacker_selected):
    agg = make_aggregator(min_agents=2, max_rounds=3, upload_timeout_seconds=2.0)
    with serving(create_app(agg, background_tick=False)) as url:
        good, good_headers = register(url, store, "good")
        other, _ = register(url, store, "other")
        if attacker_selected:
            attacker, attacker_headers = other, _
        else:  # registered after round 1 opened with good and other: not selected
            attacker, attacker_headers = register(url, store, "late")
            assert attacker not in agg.status()["selected"]
        stalled = StalledUploads(url, attacker_headers, payload(attacker, 1), count=4)
        try:
            time.sleep(0.5)  # every stalled upload is under way
            started = time.monotonic()
            response = httpx.post(f"{url}/v1/updates", content=payload(good, 1), headers=good_headers, timeout=5)
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 2.0  # it did not wait for the stalled bodies
            # selected: one body holds the agent's only slot until the read timeout, three are refused at once;
            # not selected: all four are refused before their bodies are read
            expected = [(408, "upload_timeout")] + [(409, "upload_in_progress")] * 3
            if not attacker_selected:
                expected = [(409, "not_selected")] * 4
            wait_for(lambda: len(attacker_rejections(store, agg, attacker)) == 4, 8.0)
        finally:
            stalled.finish()
    assert sorted(stalled.answers, key=str) == sorted(expected, key=str)
    assert sorted(attacker_rejections(store, agg, attacker)) == sorted(code for _, code in expected)
    assert agg.status()["received"] == 1


def attacker_rejections(store, agg, attacker):
    return [r.code for r in store.list_rejections(agg.run_id) if r.client_id == attacker]


def wait_for(predicate, timeout):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_async_mode_checks_before_the_slot_too(make_aggregator, store):
    """Async: any registered agent may upload while the run is open; before that, round_closed at once."""
    agg = make_aggregator(mode="async", buffer_size=2, min_agents=2, max_rounds=2)
    with serving(create_app(agg, background_tick=False)) as url:
        first, first_headers = register(url, store, "first")
        early = httpx.post(f"{url}/v1/updates", content=payload(first, 0), headers=first_headers, timeout=5)
        assert (early.status_code, early.json()["error"]) == (409, "round_closed")  # waiting for a second agent
        second, second_headers = register(url, store, "second")
        for agent_id, headers in ((first, first_headers), (second, second_headers)):
            response = httpx.post(f"{url}/v1/updates", content=payload(agent_id, 1), headers=headers, timeout=5)
            assert response.status_code == 200, response.text
    assert agg.status()["round"] == 2
    assert [r.code for r in store.list_rejections(agg.run_id)] == ["round_closed"]
