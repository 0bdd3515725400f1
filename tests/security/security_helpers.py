"""A real aggregator under attack: payloads built by hand and a federation driven over HTTP.

Everything here speaks docs/protocol.md and nothing else: the aggregator runs as its own
process (``fedloom server``), tokens are issued the way ``fedloom token create`` issues
them, and every request goes over loopback HTTP. So the tests that use it hold whatever
way the aggregator implements a defence, and they can only see what an attacker sees.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from fedloom.cli.federation import RUN_KIND, Child, start_aggregator, stop_all
from fedloom.core import content_hash, to_bytes
from fedloom.store import SqlStore

T = TypeVar("T")
OCTET = "application/octet-stream"
#: settings of every attacked run: small uploads, rounds that only close when told to
ATTACKED_RUN: dict[str, Any] = {
    "max_rounds": 50,
    "min_agents": 1,
    "threshold": 1.0,
    "deadline_seconds": 120,
    "check_interval_seconds": 0.2,
    "max_upload_mb": 0.25,
}


def real_shaped_model(value: float = 0.0, *, counter_shape: tuple[int, ...] = (1,)) -> dict[str, np.ndarray]:
    """A model with the tensors real ones have: float32 weights, a float64 buffer, an int64 counter.

    PyTorch's BatchNorm counter ``num_batches_tracked`` is 0-d (``counter_shape=()``); the
    attacked runs default to a 1-element one because the 0-d one has a fault of its own
    (``test_model_with_a_0d_batchnorm_counter_aggregates``), which would otherwise hide
    every other result behind it.
    """
    return {
        "fc.weight": np.full((10, 64), value, dtype=np.float32),
        "fc.bias": np.full(10, value, dtype=np.float32),
        "bn.running_var": np.full(10, 1.0 + value, dtype=np.float64),
        "bn.num_batches_tracked": np.full(counter_shape, 7, dtype=np.int64),
    }


def update_bytes(
    agent_id: str,
    round_no: int,
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    num_samples: int = 100,
    metrics: Mapping[str, float] | None = None,
) -> bytes:
    """An honest upload, encoded the way a fedloom agent encodes it."""
    return to_bytes(
        real_shaped_model() if weights is None else weights,
        round=round_no,
        client_id=agent_id,
        num_samples=num_samples,
        extra={"metrics": json.dumps(dict(metrics or {"train_loss": 1.0}))},
    )


def safetensors_bytes(header: Mapping[str, Any] | bytes, data: bytes) -> bytes:
    """A safetensors file by hand: 8-byte little-endian header length, the JSON header, the raw bytes."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def fedloom_metadata(
    weights: Mapping[str, np.ndarray], *, round_no: int, client_id: str, num_samples: object, **extra: str
) -> dict[str, str]:
    """The ``__metadata__`` a fedloom payload carries, with any field set to whatever an attacker likes."""
    return {
        "format": "fedloom/1",
        "sha256": content_hash(weights),
        "round": str(round_no),
        "client_id": client_id,
        "num_samples": str(num_samples),
        **extra,
    }


def hand_made_update(
    weights: Mapping[str, np.ndarray], metadata: Mapping[str, str], dtypes: Mapping[str, str] | None = None
) -> bytes:
    """Tensors laid out one after another, with ``dtypes`` overriding the declared dtype of some."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    data = b""
    for name, value in weights.items():
        raw = np.ascontiguousarray(value).tobytes()
        dtype = (dtypes or {}).get(name) or _ST_DTYPES[value.dtype.str]
        header[name] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return safetensors_bytes(header, data)


_ST_DTYPES = {"<f4": "F32", "<f8": "F64", "<i8": "I64", "<f2": "F16", "<i4": "I32"}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def error_code(response: httpx.Response) -> tuple[int, str]:
    """(status, error code) of a refusal, which must be the protocol's JSON error body."""
    body = response.json()
    assert set(body) == {"error", "detail"}, f"not a protocol error body: {response.text[:300]}"
    assert body["detail"], "a refusal must say what was wrong"
    return response.status_code, body["error"]


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Agent:
    """A registered agent as the wire sees it: its id, credential and role."""

    def __init__(self, name: str, answer: Mapping[str, Any]) -> None:
        self.name = name
        self.id: str = answer["agent_id"]
        self.credential: str = answer["credential"]
        self.role: str = answer["role"]
        self.run_id: str = answer["run_id"]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.credential)


class Federation:
    """One attacked run: a real ``fedloom server`` process, its store home, and HTTP helpers."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.settings: dict[str, Any] = dict(ATTACKED_RUN)
        self.server: Child | None = None
        self.url = ""
        self.admin: Agent | None = None
        self.tokens: dict[str, str] = {}

    # ----------------------------------------------------------------- processes

    def start(self, **settings: Any) -> str:
        """Start (or restart) the aggregator on this home with the run's settings."""
        self.settings.update(settings)
        self.server, self.url = start_aggregator(self.home, settings=self.settings, timeout=60)
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            stop_all([self.server], grace=10.0)
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.server.output() if self.server is not None else ""

    # ----------------------------------------------------------------- the admin's side (fedloom token)

    def issue_tokens(self, *names: str, admin: str | None = None) -> dict[str, str]:
        store = SqlStore.open_default(self.home)
        try:
            issued = {n: store.create_token(n, role="admin" if n == admin else "agent") for n in names}
        finally:
            store.close()
        self.tokens.update(issued)
        return issued

    def revoke_token(self, name: str) -> None:
        store = SqlStore.open_default(self.home)
        try:
            store.revoke_token(name)
        finally:
            store.close()

    def rejections(self) -> list[tuple[str, str | None]]:
        """(code, client id) of every refusal the aggregator recorded for its run."""
        store = SqlStore.open_default(self.home)
        try:
            run = store.find_run("default", kind=RUN_KIND)
            assert run is not None
            return [(r.code, r.client_id) for r in store.list_rejections(run.id)]
        finally:
            store.close()

    # ----------------------------------------------------------------- HTTP

    def get(self, path: str, credential: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = bearer(credential) if credential else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def post(self, path: str, body: bytes, credential: str | None = None) -> httpx.Response:
        headers = {"Content-Type": OCTET, **(bearer(credential) if credential else {})}
        return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=30)

    def upload(self, agent: Agent, body: bytes) -> httpx.Response:
        """``POST /v1/updates`` as ``agent``."""
        return self.post("/v1/updates", body, agent.credential)

    def register(self, name: str, token: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/agents/register", json={"name": name, "join_token": token}, timeout=30)

    def join(self, name: str, *, admin: bool = False) -> Agent:
        """Issue a token for ``name`` and register an agent with it."""
        token = self.issue_tokens(name, admin=name if admin else None)[name]
        response = self.register(name, token)
        assert response.status_code == 200, response.text
        return Agent(name, response.json())

    def open_run(self, *others: str, initial: Mapping[str, np.ndarray] | None = None) -> list[Agent]:
        """Start the server, register an admin agent (and ``others``), upload the initial model: round 1 opens.

        Returns the admin agent first, then ``others``; all of them are selected for round 1.
        """
        if self.server is None:
            self.start()
        self.admin = self.join("site-0", admin=True)
        agents = [self.admin, *(self.join(name) for name in others)]
        model = real_shaped_model() if initial is None else initial
        response = self.post("/v1/models/initial", to_bytes(model), self.admin.credential)
        assert response.status_code == 200, response.text
        return agents

    def status(self, agent: Agent | None = None) -> dict[str, Any]:
        who = agent or self.admin
        assert who is not None
        response = self.get("/v1/status", who.credential)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def global_model(self, agent: Agent | None = None) -> dict[str, np.ndarray]:
        from fedloom.core import from_bytes

        who = agent or self.admin
        assert who is not None
        response = self.get("/v1/models/global/latest", who.credential)
        assert response.status_code == 200, response.text
        weights, _ = from_bytes(response.content)
        return weights

    # ----------------------------------------------------------------- the run goes on

    def finish_round(self, agents: list[Agent], weights: Mapping[str, np.ndarray] | None = None) -> int:
        """Every selected agent of ``agents`` uploads an honest update; returns the round that closed."""
        before = self.status(agents[0])
        round_no = before["round"]
        by_id = {a.id: a for a in agents}
        assert set(before["selected"]) <= set(by_id), f"selected {before['selected']} are not all ours"
        for agent_id in before["selected"]:
            response = self.upload(by_id[agent_id], update_bytes(agent_id, round_no, weights=weights))
            assert response.status_code == 200, f"an honest upload was refused: {response.text}"
        closed = before["rounds_completed"] + 1
        wait_until(lambda: self.status(agents[0])["rounds_completed"] >= closed, 20, "the round to close")
        return int(round_no)

    def wait_out_rate_limit(self, agent: Agent | None = None, timeout: float = 90.0) -> None:
        """Wait until ``agent`` is answered again: a flood from loopback may rate-limit every local client."""
        who = agent or self.admin
        assert who is not None
        wait_until(
            lambda: self.get("/v1/status", who.credential).status_code != 429, timeout, "the rate limit to lapse"
        )

    def wait_for_rounds(self, count: int) -> None:
        wait_until(lambda: self.status()["rounds_completed"] >= count, 20, f"{count} round(s) to close")

    def assert_still_works(self, agents: list[Agent] | None = None) -> None:
        """The run closes a round with honest uploads, and a restarted aggregator resumes it and closes the next."""
        honest = agents or ([self.admin] if self.admin else [])
        assert honest, "no honest agent to carry the run on"
        assert self.server is not None and self.server.poll() is None, f"the aggregator died:\n{self.log()[-3000:]}"
        closed = self.finish_round(honest)
        run_id = self.status(honest[0])["run_id"]
        self.restart()
        after = self.status(honest[0])
        assert after["run_id"] == run_id, "the restarted aggregator did not resume the attacked run"
        assert after["round"] == closed + 1 and after["rounds_completed"] == closed, after
        assert self.finish_round(honest) == closed + 1
