"""Helpers of the tracking tests (imported by name: a unique module name, unlike ``conftest``)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np

from fedloom.core import to_bytes
from fedloom.server.aggregator import Aggregator
from fedloom.server.config import AggregatorConfig
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config
from fedloom.store import SqlStore
from fedloom.tracking import TrackingSettings

ROUNDS = 3


def small_config(**fields: object) -> SimConfig:
    """numpy logistic regression on digits: 6 clients, every one each round, a few rounds."""
    base = {"dataset": "digits", "model": "logreg", "clients": 6, "rounds": ROUNDS, "fraction": 1.0}
    return SimConfig(**{**base, **fields})  # type: ignore[arg-type]


def run_tracked(home: Path, settings: TrackingSettings, **fields: object) -> tuple[SqlStore, str]:
    store = SqlStore.open_default(home)
    result = simulate_config(small_config(**fields), store=store, tracking=settings)
    assert result.run_id is not None
    return store, result.run_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployment_config(**fields: object) -> AggregatorConfig:
    """Three agents, ``max_rounds`` 2, a long deadline (rounds close when every agent uploaded)."""
    base = {"max_rounds": 2, "min_agents": 3, "deadline_seconds": 600.0, "check_interval_seconds": 0.05}
    return AggregatorConfig().replace(**{**base, **fields})


def weights_of(value: float) -> dict[str, np.ndarray]:
    """A small model with the shapes real ones have: float32 weights, a float64 bias, a 0-d int64 counter."""
    return {
        "w": np.full((2, 3), value, np.float32),
        "b": np.full(3, -value, np.float64),
        "bn.num_batches_tracked": np.array(int(value * 10), np.int64),
    }


def upload_body(agent_id: str, round: int, value: float, n: int) -> bytes:
    extra = {"metrics": json.dumps({"loss": value, "train_accuracy": value / 10})}
    return to_bytes(weights_of(value), round=round, client_id=agent_id, num_samples=n, extra=extra)


def join(aggregator: Aggregator, store: SqlStore, name: str):
    return store.get_agent(aggregator.register(name, store.create_token(name)).agent_id)
