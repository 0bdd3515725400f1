"""Issue 10, system metrics in simulation: per trained client and for the simulating process."""

from __future__ import annotations

import numpy as np
import pytest

import fedloom
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task
from fedloom.store import SqlStore


@pytest.fixture
def store(tmp_path):
    with SqlStore.open_default(tmp_path / "home") as opened:
        yield opened


class FailsForTwo:
    """Client 2's trainer raises: it delivered nothing, so it has no system rows."""

    def __init__(self, inner, fail):
        self.inner, self.fail = inner, fail

    def get_weights(self):
        return self.inner.get_weights()

    def fit(self, weights, config):
        if self.fail:
            raise RuntimeError("disk on fire")
        return self.inner.fit(weights, config)

    def evaluate(self, weights, config):
        return self.inner.evaluate(weights, config)


def test_each_round_stores_client_and_process_rows(store):
    task = build_task(SimConfig(clients=4, rounds=2))
    model_bytes = sum(np.asarray(v).nbytes for v in task.initial_weights.values())
    tolerant = fedloom.fedavg(fraction=1.0, criteria=fedloom.RoundCriteria(threshold=0.5))
    result = fedloom.simulate(
        lambda i: FailsForTwo(task.client_fn(i), fail=(i == 2)),
        4,
        tolerant,
        2,
        initial_weights=task.initial_weights,
        environment=fedloom.Environment(on_client_error="skip"),
        recording=fedloom.Recording(store=store),
        observers=[],
    )
    rows = {(m.round, m.client_id, m.name): m.value for m in store.metrics(result.run_id, scope="system")}
    for round in (1, 2):
        for client in ("0", "1", "3"):
            assert rows[(round, client, "bytes_down")] == rows[(round, client, "bytes_up")] == model_bytes
            assert 0 < rows[(round, client, "seconds_train")] < 60
        assert not [k for k in rows if k[:2] == (round, "2")]
        assert rows[(round, "simulation", "memory_rss_bytes")] > 10e6
        assert rows[(round, "simulation", "cpu_percent")] >= 0
    assert {k[1] for k in rows} == {"0", "1", "3", "simulation"}
    assert result.history[0].system["simulation"]["memory_rss_bytes"] > 0  # observers see them too
