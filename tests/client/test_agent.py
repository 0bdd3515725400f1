"""The agent runtime against a tiny fake aggregator that follows docs/protocol.md.

The fake (``FakeAggregator``) runs in-process behind ``httpx.MockTransport``: the real
``AggregatorClient`` and ``Agent`` code run unchanged, no socket is opened. The SIGTERM
tests start a subprocess that imports this file to get the same fake.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedloom.client.agent import Agent, default_agent_name
from fedloom.client.agent_state import AgentStateStore
from fedloom.client.numpy_logreg import NumpyLogisticTrainer
from fedloom.client.transport import AggregatorClient, AuthError, RetryPolicy, UploadRejectedError
from fedloom.core import FitConfig, FitResult, from_bytes, to_bytes
from fedloom.core.errors import ClientError, ConfigError, SerializationError
from fedloom.core.serialization import content_hash

SITE_TOKEN = "flj_site_token"
ADMIN_TOKEN = "flj_admin_token"
NUM_SAMPLES = 40


class SimulatedCrash(BaseException):
    """Stands for the agent process dying (not an Exception, so nothing in the agent catches it)."""


# --------------------------------------------------------------------- the fake aggregator


class FakeAggregator:
    """A synchronous-mode aggregator per docs/protocol.md, small enough to read in one go.

    Every registered agent (plus ``virtual`` ones the test drives by hand) is selected in
    every round; a round closes when all selected agents uploaded, and the new global
    model is their sample-weighted mean. Hooks let tests act at precise moments.
    """

    def __init__(self, initial: dict[str, np.ndarray] | None, *, max_rounds: int = 2, virtual: int = 0) -> None:
        self.tokens = {SITE_TOKEN: "agent", ADMIN_TOKEN: "admin"}
        self.run_id = "run-1"
        self.max_rounds = max_rounds
        self.round = 1
        self.globals: dict[int, dict[str, np.ndarray]] = {} if initial is None else {1: initial}
        self.agents: dict[str, str] = {f"virtual-{i}": "agent" for i in range(virtual)}  # agent id -> role
        self.credentials: dict[str, str] = {}
        self.received: dict[int, dict[str, tuple[dict[str, np.ndarray], int]]] = {}
        self.accepted: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, int]] = []
        self.upload_bodies: list[bytes] = []
        self.registrations = 0
        self.long_poll = 0.0  # seconds a "wait" task answer may block (capped by the request's wait)
        self.reject_next_upload: tuple[int, str] | None = None
        self.before_upload: Callable[[FakeAggregator, bytes], None] | None = None
        self.after_accept: Callable[[FakeAggregator, dict[str, Any]], None] | None = None
        self.after_request: Callable[[FakeAggregator, str, str, int], None] | None = None
        self.max_requests = 2000
        self.mode = "sync"
        self.task_waits: list[float] = []
        self._lock = threading.RLock()

    # ------------------------------------------------------------ helpers for tests

    def client(self, **kwargs: Any) -> AggregatorClient:
        kwargs.setdefault("retry", RetryPolicy(base_delay=0.001, max_delay=0.01, max_attempts=3))
        return AggregatorClient("http://aggregator.test", transport=httpx.MockTransport(self.handle), **kwargs)

    @property
    def finished(self) -> bool:
        return self.round > self.max_rounds

    def selected(self) -> list[str]:
        return sorted(self.agents) if self.round in self.globals and not self.finished else []

    def submit_virtual(self, agent_id: str) -> None:
        """A virtual agent uploads the current global model unchanged (weight 1)."""
        with self._lock:
            self._accept(agent_id, self.round, self.globals[self.round], 1, {})

    def advance(self) -> None:
        """Close the current round as a deadline would, with a new global model."""
        with self._lock:
            self.globals[self.round + 1] = {k: v + 1.0 for k, v in self.globals[self.round].items()}
            self.round += 1

    def updates_posted(self, round: int) -> int:
        return sum(1 for body in self.upload_bodies if _header_round(body) == round)

    # ------------------------------------------------------------ HTTP

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if len(self.requests) >= self.max_requests:
                raise SimulatedCrash("the agent made too many requests: is it looping?")
            response = self._route(request)
            self.requests.append((request.method, request.url.path, response.status_code))
        if self.after_request is not None:
            self.after_request(self, request.method, request.url.path, response.status_code)
        return response

    def _route(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if (method, path) == ("GET", "/v1/health"):
            return httpx.Response(200, json={"ok": True})
        if (method, path) == ("POST", "/v1/agents/register"):
            return self._register(json.loads(request.content))
        agent_id = self.credentials.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        if agent_id is None:
            return _error(401, "unauthorized", "missing, invalid or revoked credential")
        if (method, path) == ("GET", "/v1/task"):
            return self._task(agent_id, float(request.url.params.get("wait", "0")))
        if method == "GET" and path.startswith("/v1/models/global/"):
            return self._global(path.rsplit("/", 1)[1])
        if (method, path) == ("POST", "/v1/models/initial"):
            return self._initial(agent_id, request.content)
        if (method, path) == ("POST", "/v1/updates"):
            return self._update(agent_id, request.content)
        if (method, path) == ("GET", "/v1/status"):
            return httpx.Response(200, json=self._status())
        return _error(404, "not_found", f"no route {method} {path}")

    def _register(self, body: dict[str, Any]) -> httpx.Response:
        role = self.tokens.get(body.get("join_token", ""))
        if role is None:
            return _error(401, "unauthorized", "invalid or revoked join token")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", body.get("name", "")):
            return _error(422, "invalid_name", "name must be 1-64 characters [A-Za-z0-9._-]")
        self.registrations += 1
        agent_id = f"agent-{body['name']}"
        self.agents[agent_id] = role
        credential = f"fla_{self.registrations:043d}"
        self.credentials[credential] = agent_id
        return httpx.Response(
            200, json={"agent_id": agent_id, "credential": credential, "role": role, "run_id": self.run_id}
        )

    def _task_info(self, agent_id: str) -> dict[str, Any]:
        r = min(self.round, self.max_rounds)
        model = self.globals.get(self.round)
        state = "wait"
        if self.finished:
            state = "finished"
        elif agent_id in self.selected() and agent_id not in self.received.get(self.round, {}):
            state = "train"
        config = {"round": r, "epochs": 1, "batch_size": 8, "lr": 0.1, "seed": 100 + r, "extra": {}}
        return {
            "state": state,
            "round": r,
            "global_round": self.round if model is not None else None,
            "global_sha256": None if model is None else content_hash(model),
            "config": config,
            "deadline": None,
        }

    def _task(self, agent_id: str, wait: float) -> httpx.Response:
        self.task_waits.append(wait)
        info = self._task_info(agent_id)
        if info["state"] == "wait" and self.long_poll:
            self._lock.release()  # block like a long poll, letting other threads in
            try:
                time.sleep(min(wait, self.long_poll))
            finally:
                self._lock.acquire()
            info = self._task_info(agent_id)
        return httpx.Response(200, json=info)

    def _global(self, which: str) -> httpx.Response:
        r = max(self.globals, default=None) if which == "latest" else int(which)
        if r is None or r not in self.globals:
            return _error(404, "not_found", f"no global model {which}")
        weights = self.globals[r]
        return httpx.Response(
            200, content=to_bytes(weights, round=r), headers={"X-Fedloom-Sha256": content_hash(weights)}
        )

    def _initial(self, agent_id: str, body: bytes) -> httpx.Response:
        if self.agents.get(agent_id) != "admin":
            return _error(403, "forbidden", "only admin agents may upload the initial model")
        if self.globals:
            return _error(409, "conflict", "the run already has a global model")
        weights, _ = from_bytes(body)
        self.globals[1] = weights
        return httpx.Response(200, json={"accepted": True, "round": 1})

    def _update(self, agent_id: str, body: bytes) -> httpx.Response:
        self.upload_bodies.append(body)
        if self.before_upload is not None:
            self.before_upload(self, body)
        if self.reject_next_upload is not None:
            status, code = self.reject_next_upload
            self.reject_next_upload = None
            return _error(status, code, f"refused by the test ({code})")
        try:
            weights, header = from_bytes(body)
        except SerializationError as exc:
            return _error(400, "invalid_payload", str(exc))
        if header.client_id != agent_id:
            return _error(403, "forbidden", f"client_id {header.client_id!r} is not the caller {agent_id!r}")
        if self.finished or header.round < self.round:
            return _error(409, "round_closed", f"round {header.round} is closed")
        if header.round != self.round:
            return _error(409, "wrong_round", f"round {header.round} is not open (round {self.round} is)")
        if agent_id not in self.selected():
            return _error(409, "not_selected", f"{agent_id} is not selected for round {self.round}")
        if agent_id in self.received.get(self.round, {}):
            return _error(409, "duplicate", f"{agent_id} already uploaded for round {self.round}")
        reference = self.globals[self.round]
        if {k: v.shape for k, v in weights.items()} != {k: v.shape for k, v in reference.items()}:
            return _error(422, "invalid_weights", "tensor shapes differ from the global model")
        metrics = json.loads((header.extra or {}).get("metrics", "{}"))
        record = self._accept(agent_id, header.round, weights, header.num_samples, metrics)
        if self.after_accept is not None:
            self.after_accept(self, record)
        return httpx.Response(200, json={"accepted": True, "round": header.round})

    def _accept(self, agent_id: str, r: int, weights: dict[str, np.ndarray], n: int, metrics: Any) -> dict[str, Any]:
        self.received.setdefault(r, {})[agent_id] = (weights, n)
        record = {"round": r, "client_id": agent_id, "num_samples": n, "metrics": metrics, "weights": weights}
        if not agent_id.startswith("virtual-"):
            self.accepted.append(record)
        if set(self.received[r]) >= set(self.selected()):
            total = sum(count for _, count in self.received[r].values())
            self.globals[r + 1] = {
                name: (
                    sum(w[name].astype(np.float64) * count for w, count in self.received[r].values()) / total
                ).astype(np.float32)
                for name in weights
            }
            self.round = r + 1
        return record

    def _status(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "round": self.round,
            "state": "finished" if self.finished else "open",
            "mode": self.mode,
            "agents": len(self.agents),
            "selected": self.selected(),
            "received": len(self.received.get(self.round, {})),
            "rounds_completed": self.round - 1,
            "max_rounds": self.max_rounds,
        }


def _error(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": detail})


def _header_round(body: bytes) -> int | None:
    try:
        return from_bytes(body)[1].round
    except SerializationError:
        return None


# --------------------------------------------------------------------- test helpers


def site_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(NUM_SAMPLES, 5)).astype(np.float32), rng.integers(0, 3, NUM_SAMPLES)


class HookedTrainer(NumpyLogisticTrainer):
    """NumpyLogisticTrainer that calls ``on_fit(config)`` before training (to act mid-training)."""

    def __init__(self, on_fit: Callable[[FitConfig], None] | None = None) -> None:
        x, y = site_data()
        super().__init__(x, y, 3)
        self.on_fit = on_fit
        self.fits: list[int] = []

    def fit(self, weights: dict[str, np.ndarray], config: FitConfig) -> FitResult:
        self.fits.append(config.round)
        if self.on_fit is not None:
            self.on_fit(config)
        return super().fit(weights, config)


def initial_weights() -> dict[str, np.ndarray]:
    return HookedTrainer().get_weights()


def make_agent(
    fake: FakeAggregator,
    state_dir: Path,
    trainer: HookedTrainer | None = None,
    *,
    token: str | None = SITE_TOKEN,
    name: str = "site-a",
    **kwargs: Any,
) -> Agent:
    kwargs.setdefault("poll_wait", 0.01)
    kwargs.setdefault("min_poll_interval", 0.0)
    chosen = trainer or HookedTrainer()
    return Agent(fake.client(), lambda: chosen, state_dir, name, token, **kwargs)


def saved_state(state_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    return data


def record_phases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every phase written to state.json, consecutive repeats collapsed."""
    phases: list[str] = []
    original = AgentStateStore.save

    def save(self: AgentStateStore, state: Any) -> None:
        original(self, state)
        if not phases or phases[-1] != state.phase:
            phases.append(str(state.phase))

    monkeypatch.setattr(AgentStateStore, "save", save)
    return phases


# --------------------------------------------------------------------- the loop


def test_full_loop_over_two_rounds(tmp_path: Path) -> None:
    fake = FakeAggregator(initial_weights(), max_rounds=2)
    trainer = HookedTrainer()
    assert make_agent(fake, tmp_path / "state", trainer).run() == "finished"

    assert [a["round"] for a in fake.accepted] == [1, 2]
    assert trainer.fits == [1, 2]
    for record in fake.accepted:
        assert record["client_id"] == "agent-site-a"
        assert record["num_samples"] == NUM_SAMPLES
        assert set(record["metrics"]) == {"train_loss", "local_steps"}
        start = fake.globals[record["round"]]
        assert any(not np.allclose(record["weights"][k], start[k]) for k in start), "weights did not change"
    assert fake.registrations == 1
    state = saved_state(tmp_path / "state")
    assert state["state"] == "finished"
    assert state["agent_id"] == "agent-site-a"
    assert state["uploaded_round"] == 2
    assert not (tmp_path / "state" / "local.safetensors").exists()
    final, _ = from_bytes((tmp_path / "state" / "global.safetensors").read_bytes())
    assert content_hash(final) == content_hash(fake.globals[3])  # the site keeps the final model


def test_state_file_goes_through_the_phases_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    phases = record_phases(monkeypatch)
    state_dir = tmp_path / "state"
    seen_during_fit: list[str] = []
    seen_during_upload: list[tuple[str, bool]] = []

    def during_fit(config: FitConfig) -> None:
        seen_during_fit.append(saved_state(state_dir)["state"])

    def during_upload(fake: FakeAggregator, body: bytes) -> None:
        on_disk = (state_dir / "local.safetensors").read_bytes()
        seen_during_upload.append((saved_state(state_dir)["state"], on_disk == body))

    fake = FakeAggregator(initial_weights(), max_rounds=2)
    fake.before_upload = during_upload
    assert make_agent(fake, state_dir, HookedTrainer(during_fit)).run() == "finished"

    one_round = ["gm_ready", "training", "sending", "waiting_gm"]
    assert phases == ["waiting_gm", *one_round, *one_round, "finished"]
    assert seen_during_fit == ["training", "training"]
    assert seen_during_upload == [("sending", True), ("sending", True)]


def test_after_each_step_the_agent_looks_at_once_then_long_polls(tmp_path: Path) -> None:
    """A long poll only answers early when the task changes: after a step, look first (wait=0)."""
    fake = FakeAggregator(initial_weights(), max_rounds=1, virtual=1)

    def other_agent_uploads_during_a_long_poll(fake: FakeAggregator, method: str, path: str, status: int) -> None:
        if path == "/v1/task" and fake.task_waits[-1] == 7 and fake.round == 1:
            fake.submit_virtual("virtual-0")

    fake.after_request = other_agent_uploads_during_a_long_poll
    assert make_agent(fake, tmp_path / "state", poll_wait=7).run() == "finished"
    # first look, pre-upload stale check, look after the upload, long poll (round closes), long poll (finished)
    assert fake.task_waits == [0, 0, 0, 7, 7]


def test_credentials_are_private(tmp_path: Path) -> None:
    fake = FakeAggregator(initial_weights(), max_rounds=1)
    make_agent(fake, tmp_path / "state").run()
    assert (tmp_path / "state" / "state.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert saved_state(tmp_path / "state")["credential"].startswith("fla_")


def test_progress_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedloom.agent")
    make_agent(FakeAggregator(initial_weights(), max_rounds=1), tmp_path / "state").run()
    text = caplog.text
    assert "registered as site-a" in text
    assert "state waiting_gm → gm_ready" in text
    assert re.search(r"round 1: trained on 40 samples in [0-9.]+ s, train_loss=", text)
    assert "round 1: upload ok" in text
    assert "the run is finished" in text


# --------------------------------------------------------------------- restarts


def test_restart_in_sending_reuploads_the_saved_model_exactly_once(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    fake = FakeAggregator(initial_weights(), max_rounds=2)

    def crash_before_accepting(fake: FakeAggregator, body: bytes) -> None:
        fake.before_upload = None
        raise SimulatedCrash("power cut during the upload")

    fake.before_upload = crash_before_accepting
    with pytest.raises(SimulatedCrash):
        make_agent(fake, state_dir).run()
    assert saved_state(state_dir)["state"] == "sending"
    assert saved_state(state_dir)["pending"]["round"] == 1
    saved = (state_dir / "local.safetensors").read_bytes()
    assert fake.accepted == []

    restarted = HookedTrainer()
    assert make_agent(fake, state_dir, restarted, token=None).run() == "finished"
    assert fake.upload_bodies[1] == saved  # the very same bytes, re-sent
    assert fake.updates_posted(1) == 2  # the crashed attempt and exactly one re-upload
    assert [a["round"] for a in fake.accepted] == [1, 2]
    assert restarted.fits == [2]  # round 1 was not retrained
    assert fake.registrations == 1


def test_restart_after_the_upload_landed_takes_duplicate_as_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedloom.agent")
    state_dir = tmp_path / "state"
    fake = FakeAggregator(initial_weights(), max_rounds=1, virtual=1)  # a second agent keeps round 1 open

    def crash_after_accepting(fake: FakeAggregator, record: dict[str, Any]) -> None:
        fake.after_accept = None
        raise SimulatedCrash("the answer was lost")

    def other_agent_uploads_after_duplicate(fake: FakeAggregator, method: str, path: str, status: int) -> None:
        if path == "/v1/updates" and status == 409:
            fake.after_request = None
            fake.submit_virtual("virtual-0")

    fake.after_accept = crash_after_accepting
    with pytest.raises(SimulatedCrash):
        make_agent(fake, state_dir).run()
    assert saved_state(state_dir)["state"] == "sending"

    fake.after_request = other_agent_uploads_after_duplicate
    before = len(fake.requests)
    restarted = HookedTrainer()
    assert make_agent(fake, state_dir, restarted, token=None).run() == "finished"
    assert fake.updates_posted(1) == 2
    assert [s for m, p, s in fake.requests[before:] if p == "/v1/updates"] == [409]
    assert len(fake.accepted) == 1
    assert restarted.fits == []
    assert "answered duplicate" in caplog.text
    assert saved_state(state_dir)["uploaded_round"] == 1


def test_restart_never_registers_again(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    fake = FakeAggregator(initial_weights(), max_rounds=1)
    assert make_agent(fake, state_dir).run() == "finished"
    credential = saved_state(state_dir)["credential"]

    fake.max_rounds = 2  # the run goes on (e.g. an operator raised max_rounds)
    assert make_agent(fake, state_dir, token=None).run() == "finished"
    assert make_agent(fake, state_dir, token=SITE_TOKEN).run() == "finished"
    assert fake.registrations == 1
    assert saved_state(state_dir)["credential"] == credential
    assert [a["round"] for a in fake.accepted] == [1, 2]


def test_restart_in_training_trains_again(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    fake = FakeAggregator(initial_weights(), max_rounds=1)

    def die(config: FitConfig) -> None:
        raise SimulatedCrash("killed while training")

    with pytest.raises(SimulatedCrash):
        make_agent(fake, state_dir, HookedTrainer(die)).run()
    assert saved_state(state_dir)["state"] == "training"
    downloads = sum(1 for m, p, s in fake.requests if p.startswith("/v1/models/global/"))

    restarted = HookedTrainer()
    assert make_agent(fake, state_dir, restarted, token=None).run() == "finished"
    assert restarted.fits == [1]
    assert [a["round"] for a in fake.accepted] == [1]
    # the held global model was reused: only the final "latest" download was added
    assert sum(1 for m, p, s in fake.requests if p.startswith("/v1/models/global/")) == downloads + 1


def test_a_refused_credential_leads_to_one_new_registration(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    fake = FakeAggregator(initial_weights(), max_rounds=1)
    make_agent(fake, state_dir).run()
    fake.credentials.clear()  # e.g. the aggregator's admin revoked the agent credentials
    fake.max_rounds = 2
    assert make_agent(fake, state_dir).run() == "finished"
    assert fake.registrations == 2
    assert saved_state(state_dir)["agent_id"] == "agent-site-a"
    assert [a["round"] for a in fake.accepted] == [1, 2]


def test_a_revoked_token_fails_clearly(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    fake = FakeAggregator(initial_weights(), max_rounds=1)
    make_agent(fake, state_dir).run()
    fake.credentials.clear()
    fake.tokens.clear()
    with pytest.raises(AuthError, match="join token was refused") as info:
        make_agent(fake, state_dir).run()
    assert info.value.status == 401
    with pytest.raises(AuthError, match="no join token was given"):
        make_agent(fake, state_dir, token=None).run()


def test_no_credential_and_no_token_is_a_config_error(tmp_path: Path) -> None:
    fake = FakeAggregator(initial_weights())
    with pytest.raises(ConfigError, match="no join token"):
        make_agent(fake, tmp_path / "state", token=None).run()
    assert fake.requests == []


def test_a_new_run_on_the_server_resets_the_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    make_agent(FakeAggregator(initial_weights(), max_rounds=1), state_dir).run()
    fresh = FakeAggregator(initial_weights(), max_rounds=1)  # a new aggregator database: old credential unknown
    fresh.run_id = "run-2"
    assert make_agent(fresh, state_dir).run() == "finished"
    assert saved_state(state_dir)["run_id"] == "run-2"
    assert [a["round"] for a in fresh.accepted] == [1]


# --------------------------------------------------------------------- stale results


def test_a_result_made_stale_during_training_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedloom.agent")
    fake = FakeAggregator(initial_weights(), max_rounds=2)

    def round_closes_meanwhile(config: FitConfig) -> None:
        if config.round == 1:
            fake.advance()

    trainer = HookedTrainer(round_closes_meanwhile)
    assert make_agent(fake, tmp_path / "state", trainer).run() == "finished"
    assert trainer.fits == [1, 2]
    assert fake.updates_posted(1) == 0
    assert [a["round"] for a in fake.accepted] == [2]
    assert "dropping the stale local model" in caplog.text


def test_keep_stale_uploads_it_anyway(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fedloom.agent")
    fake = FakeAggregator(initial_weights(), max_rounds=2)

    def round_closes_meanwhile(config: FitConfig) -> None:
        if config.round == 1:
            fake.advance()

    trainer = HookedTrainer(round_closes_meanwhile)
    agent = make_agent(fake, tmp_path / "state", trainer, discard_stale=False)
    assert agent.run() == "finished"
    assert fake.updates_posted(1) == 1
    assert [s for m, p, s in fake.requests if p == "/v1/updates"] == [409, 200]
    assert [a["round"] for a in fake.accepted] == [2]
    assert "answered round_closed" in caplog.text


def test_a_global_model_not_there_yet_is_asked_for_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAggregator(initial_weights(), max_rounds=1)
    original = fake._global
    answers = iter([_error(404, "not_found", "still being written")])
    monkeypatch.setattr(fake, "_global", lambda which: next(answers, None) or original(which))
    monkeypatch.setattr("fedloom.client.agent.Agent._pause", lambda self, seconds: None)
    assert make_agent(fake, tmp_path / "state").run() == "finished"
    statuses = [s for m, p, s in fake.requests if p == "/v1/models/global/1"]
    assert statuses == [404, 200]


def test_stale_results_are_uploaded_in_an_asynchronous_run(tmp_path: Path) -> None:
    fake = FakeAggregator(initial_weights(), max_rounds=2)
    fake.mode = "async"

    def new_version_meanwhile(config: FitConfig) -> None:
        if config.round == 1:
            fake.advance()

    assert make_agent(fake, tmp_path / "state", HookedTrainer(new_version_meanwhile)).run() == "finished"
    assert fake.updates_posted(1) == 1  # sent; this fake refuses it, a real async aggregator weights it down


# --------------------------------------------------------------------- initial model, failures


def test_admin_agent_uploads_the_initial_model(tmp_path: Path) -> None:
    fake = FakeAggregator(None, max_rounds=1)
    trainer = HookedTrainer()
    agent = make_agent(fake, tmp_path / "state", trainer, token=ADMIN_TOKEN, upload_initial=True)
    assert agent.run() == "finished"
    assert content_hash(fake.globals[1]) == content_hash(initial_weights())
    assert ("POST", "/v1/models/initial", 200) in fake.requests
    # a second admin start finds the model there and uploads nothing
    fake.max_rounds = 2
    assert make_agent(fake, tmp_path / "state", token=None, upload_initial=True).run() == "finished"
    assert sum(1 for m, p, s in fake.requests if p == "/v1/models/initial") == 1


def test_plain_agent_does_not_try_the_initial_upload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeAggregator(initial_weights(), max_rounds=1)
    assert make_agent(fake, tmp_path / "state", upload_initial=True).run() == "finished"
    assert "only admin agents may" in caplog.text
    assert all(p != "/v1/models/initial" for m, p, s in fake.requests)


def test_a_failing_trainer_stops_the_agent_in_training(tmp_path: Path) -> None:
    def boom(config: FitConfig) -> None:
        raise RuntimeError("CUDA out of memory")

    fake = FakeAggregator(initial_weights(), max_rounds=1)
    with pytest.raises(ClientError, match=r"round 1: trainer\.fit raised RuntimeError: CUDA out of memory"):
        make_agent(fake, tmp_path / "state", HookedTrainer(boom)).run()
    assert saved_state(tmp_path / "state")["state"] == "training"


def test_a_permanent_upload_refusal_is_raised_and_the_result_dropped(tmp_path: Path) -> None:
    fake = FakeAggregator(initial_weights(), max_rounds=1)
    fake.reject_next_upload = (422, "invalid_weights")
    with pytest.raises(UploadRejectedError) as info:
        make_agent(fake, tmp_path / "state").run()
    assert (info.value.code, info.value.status) == ("invalid_weights", 422)
    assert saved_state(tmp_path / "state")["state"] == "waiting_gm"
    assert not (tmp_path / "state" / "local.safetensors").exists()
    assert make_agent(fake, tmp_path / "state").run() == "finished"  # a restart trains the round again


def test_non_finite_weights_are_refused_before_upload(tmp_path: Path) -> None:
    class NanTrainer(HookedTrainer):
        def fit(self, weights: dict[str, np.ndarray], config: FitConfig) -> FitResult:
            bad = {k: np.full_like(v, np.nan) for k, v in weights.items()}
            return FitResult(bad, NUM_SAMPLES, {})

    fake = FakeAggregator(initial_weights(), max_rounds=1)
    with pytest.raises(ClientError, match="NaN"):
        make_agent(fake, tmp_path / "state", NanTrainer()).run()
    assert fake.upload_bodies == []


def test_two_agents_cannot_share_a_state_dir(tmp_path: Path) -> None:
    fake = FakeAggregator(initial_weights())
    first = make_agent(fake, tmp_path / "state")
    with first.store.locked(), pytest.raises(ConfigError, match="another agent is running"):
        make_agent(fake, tmp_path / "state").run()


def test_agent_name_is_checked_and_defaults_to_a_valid_host_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent name"):
        make_agent(FakeAggregator(None), tmp_path, name="no spaces please")
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", default_agent_name())


# --------------------------------------------------------------------- stopping


def test_stop_from_another_thread_ends_the_run_cleanly(tmp_path: Path) -> None:
    fake = FakeAggregator(None)  # no global model: the agent waits
    fake.long_poll = 0.05
    agent = make_agent(fake, tmp_path / "state", poll_wait=30)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(agent.run()))
    thread.start()
    deadline = time.monotonic() + 10
    while not any(p == "/v1/task" for m, p, s in fake.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    agent.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcome == ["stopped"]
    state = saved_state(tmp_path / "state")
    assert state["state"] == "waiting_gm"
    assert state["credential"]


# The SIGTERM tests run an agent in a subprocess (signals go to the main thread of a process).
SUBPROCESS_SCRIPT = """
import importlib.util, logging, sys
spec = importlib.util.spec_from_file_location("agent_tests", sys.argv[1])
tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tests)
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
scenario, state_dir = sys.argv[2], sys.argv[3]

def say(word):
    print(word, flush=True)

if scenario == "long-poll":
    fake = tests.FakeAggregator(None)
    fake.long_poll = 60.0
    original = fake._task
    def task(agent_id, wait):
        say("POLLING")
        return original(agent_id, wait)
    fake._task = task
else:  # "upload": the signal arrives while the upload is in flight
    fake = tests.FakeAggregator(tests.initial_weights(), max_rounds=1, virtual=1)
    def slow_upload(f, body):
        import time
        say("UPLOADING")
        time.sleep(1.0)
    fake.before_upload = slow_upload
agent = tests.make_agent(fake, tests.Path(state_dir), poll_wait=30)
outcome = agent.run()
say(f"OUTCOME {outcome} accepted={len(fake.accepted)}")
"""


def run_until_then_signal(tmp_path: Path, scenario: str, marker: str, sig: signal.Signals) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBPROCESS_SCRIPT, __file__, scenario, str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = proc.stdout.readline().strip()
        assert seen == marker, f"expected {marker}, got {seen!r}; stderr:\n{proc.stderr.read() if proc.stderr else ''}"
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        assert time.monotonic() - started < 10, "the agent took too long to stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_long_poll_stops_at_once_with_state_saved(tmp_path: Path, sig: signal.Signals) -> None:
    rc, out, err = run_until_then_signal(tmp_path, "long-poll", "POLLING", sig)
    assert rc == 0, err
    assert "OUTCOME stopped" in out
    assert f"received {sig.name}" in err
    state = saved_state(tmp_path / "state")
    assert state["state"] == "waiting_gm"
    assert state["credential"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_during_an_upload_finishes_the_upload_first(tmp_path: Path) -> None:
    rc, out, err = run_until_then_signal(tmp_path, "upload", "UPLOADING", signal.SIGTERM)
    assert rc == 0, err
    assert "OUTCOME stopped accepted=1" in out
    state = saved_state(tmp_path / "state")
    assert state["state"] == "waiting_gm"
    assert state["uploaded_round"] == 1
    assert not (tmp_path / "state" / "local.safetensors").exists()
