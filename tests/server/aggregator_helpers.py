"""Helpers shared by the deployment aggregator tests (imported by name: tests/server is on sys.path)."""

from __future__ import annotations

import json
import time

import numpy as np

from fedloom.core import to_bytes
from fedloom.server.aggregator import Aggregator
from fedloom.server.config import AggregatorConfig
from fedloom.store import SqlStore

INIT = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


class Clock:
    """Wall-clock seconds that only move when a test moves them."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def weights_of(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, np.float32), "b": np.full(3, -value, np.float32)}


def payload(agent_id: str, round: int, value: float = 1.0, n: int = 10, metrics=None, weights=None) -> bytes:
    extra = {"metrics": json.dumps(metrics if metrics is not None else {"loss": value})}
    return to_bytes(
        weights if weights is not None else weights_of(value),
        round=round,
        client_id=agent_id,
        num_samples=n,
        extra=extra,
    )


def config(**fields) -> AggregatorConfig:
    """Test defaults (3 rounds, short deadline) with flat-named overrides."""
    base = {"max_rounds": 3, "deadline_seconds": 60.0, "check_interval_seconds": 0.05}
    return AggregatorConfig().replace(**{**base, **fields})


def join(aggregator: Aggregator, store: SqlStore, name: str, role: str = "agent"):
    """Create a join token for ``name`` and register the agent with it; returns the Registration."""
    token = store.create_token(name, role=role)
    return aggregator.register(name, token)


def agent_of(store: SqlStore, agent_id: str):
    return store.get_agent(agent_id)
