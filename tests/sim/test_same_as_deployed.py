"""The differential test: a simulation and a deployed aggregator give the same global models.

Same seed, strategy, client speeds and deadline policy. The simulated side is
``simulate``; the deployed side is the real :class:`Aggregator` (store, uploads as
safetensors bytes, refusals) with in-process agents that train the same trainers and
upload when the same simulated speeds say they finish, on a settable wall clock. Every
global model must be bitwise identical, round by round (or version by version).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.core.fit import FitConfig
from fedloom.core.serialization import from_bytes, to_bytes
from fedloom.server.aggregator import Aggregator, RequestRefusedError
from fedloom.server.config import AggregatorConfig
from fedloom.sim.clock import ClientSpeeds
from fedloom.sim.config import SimConfig
from fedloom.sim.environment import SimEnvironment
from fedloom.sim.tasks import build_task, simulate_config
from fedloom.store import SqlStore

CLIENTS, SEED = 6, 3
SPEEDS = ClientSpeeds("pareto", spread=1.2, median_seconds_per_sample=0.01, latency_seconds=1.0)


class NamedAgents:
    """The real store, but agents' ids are their names ("0", "1", ...), as a simulation's clients are.

    Selection and fit seeds derive from client ids, so both sides must use the same ids."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def register_agent(self, run_id, name, token):
        agent, credential = self._store.register_agent(run_id, name, token)
        return dataclasses.replace(agent, id=name), credential

    def list_agents(self, run_id):
        return [dataclasses.replace(a, id=a.name) for a in self._store.list_agents(run_id)]

    def authenticate(self, credential):
        agent = self._store.authenticate(credential)
        return None if agent is None else dataclasses.replace(agent, id=agent.name)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0  # the simulated clock starts at 0 too, so both add the same floats

    def __call__(self) -> float:
        return self.now


def _sim_config(**changes) -> SimConfig:
    base = {"dataset": "digits", "clients": CLIENTS, "rounds": 5, "lr": 0.5, "batch_size": 16, "seed": SEED}
    return SimConfig(**{**base, "speeds": "pareto", "speed_spread": SPEEDS.spread, **changes})


def _models(store: SqlStore, run_id: str) -> dict[int, dict[str, np.ndarray]]:
    return {m.round: store.load_global_model(run_id, m.round) for m in store.list_global_models(run_id) if m.round}


def simulated(tmp_path, **changes) -> dict[int, dict[str, np.ndarray]]:
    store = SqlStore.open_default(tmp_path / "sim")
    result = simulate_config(_sim_config(**changes), store=store)
    return _models(store, result.run_id)


class Deployed:
    """The deployed aggregator with in-process agents driven by the simulated speeds."""

    def __init__(self, tmp_path, config: SimConfig, **settings) -> None:
        self.task = build_task(config)
        self.environment = SimEnvironment(SPEEDS, self.task.client_sizes, config.epochs, config.seed)
        self.store = SqlStore.open_default(tmp_path / "deployed")
        self.clock = Clock()
        fields = {"max_rounds": config.rounds, "min_agents": 1, "seed": config.seed, "lr": config.lr}
        aggregator_config = AggregatorConfig().replace(**{**fields, "batch_size": config.batch_size, **settings})
        self.agg = Aggregator(aggregator_config, NamedAgents(self.store), clock=self.clock)
        self.agents = [str(i) for i in range(CLIENTS)]
        for name in self.agents:  # every agent is registered before the first round opens
            self.agg.register(name, self.store.create_token(name))
        admin = SimpleNamespace(id="0", name="0", role="admin", run_id=self.agg.run_id)
        self.agg.upload_initial(admin, to_bytes(self.task.initial_weights))

    def upload(self, client_id: str) -> bytes | None:
        """Train ``client_id`` on its task, as its agent would; None when its task is not to train."""
        task = self.agg.task_for(client_id)
        if task.state != "train":
            return None
        weights, _ = self._global()
        result = fit_with_state(
            self.task.client_fn(int(client_id)), weights, FitConfig(**task.config), LocalContext(client_id)
        )
        extra = {"metrics": json.dumps(dict(result.metrics))}
        return to_bytes(
            result.weights, round=task.round, client_id=client_id, num_samples=result.num_samples, extra=extra
        )

    def _global(self):
        body, _ = self.agg.global_model_bytes("latest")
        return from_bytes(body)

    def send(self, client_id: str, body: bytes) -> None:
        agent = SimpleNamespace(id=client_id, name=client_id, role="agent", run_id=self.agg.run_id)
        try:
            self.agg.submit_update(agent, body)
        except RequestRefusedError as refused:  # a late upload: refused as the simulation refuses it
            assert refused.code in ("wrong_round", "round_closed"), refused.code

    def models(self) -> dict[int, dict[str, np.ndarray]]:
        return _models(self.store, self.agg.run_id)


def _deadlines_until(run: Deployed, moment: float, round_no: int) -> None:
    """The aggregator's timer: tick at every deadline of the open round that passes before ``moment``."""
    for _ in range(100):
        deadline = run.agg.round_deadline
        if deadline is None or deadline > moment or run.agg.current_round != round_no:
            return
        run.clock.now = deadline
        run.agg.tick()


def run_sync(run: Deployed) -> dict[int, dict[str, np.ndarray]]:
    """Each round: the selected agents train from the opening and upload when their speed says."""
    while run.agg.status()["state"] == "collecting":
        status = run.agg.status()
        round_no, deadline = status["round"], run.agg.round_deadline
        opened = run.clock.now if deadline is None else deadline - run.agg.config.rounds.deadline_seconds
        arrivals = []
        for cid in status["selected"]:
            if run.environment.drops(round_no, cid):
                continue
            body = run.upload(cid)
            assert body is not None
            arrivals.append((opened + run.environment.seconds(cid), int(cid), body))
        for moment, cid, body in sorted(arrivals, key=lambda a: (a[0], a[1])):
            _deadlines_until(run, moment, round_no)
            run.clock.now = max(run.clock.now, moment)
            run.send(str(cid), body)
        _deadlines_until(run, float("inf"), round_no)
    assert run.agg.status()["state"] == "finished"
    return run.models()


def run_async(run: Deployed) -> dict[int, dict[str, np.ndarray]]:
    """Every agent trains as soon as its task says so and uploads when its speed says."""
    in_flight: list[tuple[float, int, bytes]] = []
    busy: set[str] = set()

    def launch() -> None:
        for cid in sorted(set(run.agents) - busy, key=int):
            body = run.upload(cid)
            if body is not None:
                busy.add(cid)
                heapq.heappush(in_flight, (run.clock.now + run.environment.seconds(cid), int(cid), body))

    launch()
    while in_flight and run.agg.status()["state"] != "finished":
        moment, cid, body = heapq.heappop(in_flight)
        run.clock.now = moment
        busy.discard(str(cid))
        run.send(str(cid), body)
        launch()
    return run.models()


def _assert_same(simulated_models, deployed_models) -> Iterator[int]:
    assert sorted(simulated_models) == sorted(deployed_models)
    for number, weights in simulated_models.items():
        for name, value in weights.items():
            np.testing.assert_array_equal(deployed_models[number][name], value, err_msg=f"model {number} {name}")
    return iter(sorted(simulated_models))


@pytest.mark.parametrize(
    ("policy", "deadline", "threshold"),
    [
        ("aggregate", 3.5, 1.0),  # the deadline drops the slow clients (3.9 s and 4.7 s) of each round
        ("abandon", 2.45, 0.5),  # rounds without half their clients by the deadline make no model
        ("extend", 2.0, 1.0),  # every round waits for its slowest client, one extension at a time
    ],
)
def test_sync_rounds_with_deadlines_match_the_deployed_aggregator(tmp_path, policy, deadline, threshold):
    changes = {"deadline_seconds": deadline, "on_deadline": policy, "threshold": threshold, "fraction": 0.7}
    sim = simulated(tmp_path, **changes)
    settings = {"deadline_seconds": deadline, "deadline_policy": policy, "threshold": threshold, "fraction": 0.7}
    deployed = run_sync(Deployed(tmp_path, _sim_config(**changes), **settings))
    rounds = list(_assert_same(sim, deployed))
    if policy == "abandon":  # clients take 2.3, 3.9, 2.3, 2.5, 4.7 and 2.4 s: only round 2 has two in time
        assert rounds == [2]
    else:
        assert rounds == [1, 2, 3, 4, 5]


def test_sync_deadline_really_drops_a_client(tmp_path):
    """The scenario above is not vacuous: with the deadline some rounds aggregate fewer clients."""
    store = SqlStore.open_default(tmp_path / "sim")
    result = simulate_config(_sim_config(deadline_seconds=3.5, fraction=0.7), store=store)
    selected = [h.num_selected for h in result.history]
    assert any(h.num_updates < n for h, n in zip(result.history, selected, strict=True))
    assert any(r.code == "wrong_round" for r in store.list_rejections(result.run_id))  # the late upload


def test_async_fedbuff_matches_the_deployed_aggregator(tmp_path):
    changes = {"mode": "fedbuff", "buffer_size": 3, "concurrency": CLIENTS, "rounds": 6}
    sim = simulated(tmp_path, **changes)
    settings = {"mode": "async", "buffer_size": 3}
    deployed = run_async(Deployed(tmp_path, _sim_config(**changes), **settings))
    assert list(_assert_same(sim, deployed)) == [1, 2, 3, 4, 5, 6]
