"""The two small RoundEngine additions the deployment aggregator needs."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.algorithms import fedavg
from fedloom.core import ClientUpdate, ValidationError
from fedloom.server import RoundEngine

INIT = {"w": np.zeros(2, np.float32)}


def engine_with(clients, fraction=0.5):
    engine = RoundEngine(fedavg(fraction=fraction), INIT, seed=3, max_rounds=5, start_round=4)
    engine.register_clients((c, None) for c in clients)
    return engine


def test_open_round_with_a_recorded_selection_skips_sampling():
    engine = engine_with(["a", "b", "c", "d", "e"])
    task = engine.open_round(selected=("b", "e"))
    assert task.round == 4 and task.selected == ("b", "e")
    engine.submit(ClientUpdate("e", 4, {"w": np.ones(2, np.float32)}, 3))
    assert engine.received_from() == ("e",)
    with pytest.raises(ValidationError, match="not registered"):
        engine_with(["a"]).open_round(selected=("a", "z"))


def test_received_from_is_empty_without_an_open_round():
    engine = engine_with(["a", "b"], fraction=1.0)
    assert engine.received_from() == ()
    task = engine.open_round()
    assert task.selected == ("a", "b") and engine.received_from() == ()
