"""Issue 11, secure aggregation in deployment: the SecAgg+ stages over HTTP with real agents
in threads against a real uvicorn (``[secagg] secure_aggregation = "on"``).

The global models equal those of the same federation without secure aggregation within
the quantisation bound; agents that stop answering at a stage are dropouts the round is
rebuilt around (FedAvg of the survivors) or, below the threshold, the round is abandoned
with its recorded reason and the run goes on; hostile stage bodies are refused by field
and recorded."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from aggregator_helpers import config
from live_server import serving

from fedloom.client.agent import Agent
from fedloom.client.transport import AggregatorClient
from fedloom.core import FitResult
from fedloom.core.errors import ConfigError
from fedloom.server.aggregator import Aggregator
from fedloom.server.app import create_app
from fedloom.server.secagg_rounds import SecAggRounds
from fedloom.store import SqlStore

pytest.importorskip("cryptography")

#: a model with the shapes real ones have: float32 weights, a float64 tensor, a 0-d float,
#: and BatchNorm's 0-d int64 ``num_batches_tracked``
INIT = {
    "w": np.zeros((2, 3), np.float32),
    "b": np.zeros(3, np.float32),
    "scale": np.array(1.5, np.float64),
    "bn.num_batches_tracked": np.array(7, np.int64),
}
NAMES = ("site-a", "site-b", "site-c")
BITS, CLIP = 20, 1.0
STEP = CLIP / (2**BITS - 1)  # the quantisation step: each element of a delta is off by at most this


def step_of(name: str) -> tuple[float, int]:
    index = NAMES.index(name) if name in NAMES else 3
    return 0.01 * (index + 1) * (-1) ** index, 10 * (index + 1)


class SiteTrainer:
    """Moves every float by a site-specific amount (and counts a batch), so FedAvg is not trivial."""

    def __init__(self, name: str) -> None:
        self.delta, self.samples = step_of(name)

    def get_weights(self):
        return dict(INIT)

    def fit(self, weights, config, terms=None):
        moved = {}
        for key, value in weights.items():
            if value.dtype.kind == "i":
                moved[key] = np.asarray(value + 1, value.dtype)
            else:
                pattern = np.linspace(-1, 1, value.size).reshape(value.shape) if value.ndim else 1.0
                moved[key] = np.asarray(value + self.delta * (1 + np.asarray(pattern)), value.dtype)
        return FitResult(moved, self.samples, {"loss": abs(self.delta)})

    def evaluate(self, weights, config):
        return {"loss": 0.5}


def secure(**fields):
    base = {
        "secure_aggregation": "on",
        "bits": BITS,
        "clip_range": CLIP,
        "stage_timeout_seconds": 5.0,
        "min_agents": 3,
        "linger_seconds": 0.0,
    }
    return config(**{**base, **fields})


def run_agents(url, store, tmp_path, names, make_trainer=SiteTrainer, timeout=90.0):
    errors: list[BaseException] = []

    def one(name):
        with AggregatorClient(url, timeout=10) as client:
            token = store.create_token(name)
            agent = Agent(
                client, lambda: make_trainer(name), tmp_path / name, name, token, poll_wait=0.3, handle_signals=False
            )
            try:
                agent.run()
            except BaseException as exc:  # reported to the test
                errors.append(exc)

    threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "an agent did not finish"
    return errors


def final_weights(store, run_id):
    rounds = [m.round for m in store.list_global_models(run_id)]
    return max(rounds), store.load_global_model(run_id, max(rounds))


def fedavg(weights, contributors):
    """The plain weighted mean of the sites' local models trained from ``weights``."""
    models = [(SiteTrainer(n).fit(weights, None).weights, SiteTrainer(n).samples) for n in contributors]
    total = sum(n for _, n in models)
    out = {}
    for key, value in weights.items():
        mean = sum(np.asarray(m[key], np.float64) * n for m, n in models) / total
        out[key] = np.asarray(np.rint(mean) if value.dtype.kind == "i" else mean, value.dtype)
    return out


def assert_close(got, want, rounds):
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        if value.dtype.kind == "i":
            np.testing.assert_array_equal(got[key], value)
        else:
            bound = rounds * STEP + 4 * np.finfo(value.dtype).eps * (1 + np.max(np.abs(value)))
            assert np.max(np.abs(got[key].astype(np.float64) - value.astype(np.float64))) <= bound, key


def rejections(store, run_id, code):
    return [r for r in store.list_rejections(run_id) if r.code == code]


def test_secure_rounds_equal_plain_fedavg_within_the_quantisation_bound(store, tmp_path):
    plain_home = tmp_path / "plain"
    agg = Aggregator(secure(max_rounds=3), store, initial_weights=INIT)
    assert isinstance(agg._state.rounds, SecAggRounds)
    with serving(create_app(agg)) as url:
        assert run_agents(url, store, tmp_path, NAMES) == []
    last, secured = final_weights(store, agg.run_id)
    assert last == 3
    expected = dict(INIT)
    for _ in range(3):
        expected = fedavg(expected, NAMES)
    assert_close(secured, expected, rounds=3)
    assert int(secured["bn.num_batches_tracked"]) == 10  # three exact counts on top of 7
    # the plain federation of the same sites ends at the same model (within the bound)
    with SqlStore.open_default(plain_home / "home") as other:
        plain = Aggregator(config(min_agents=3, max_rounds=3, linger_seconds=0.0), other, initial_weights=INIT)
        with serving(create_app(plain)) as url:
            assert run_agents(url, other, plain_home, NAMES) == []
        assert_close(secured, final_weights(other, plain.run_id)[1], rounds=3)
    # each round records its contributors (masked-input hashes, no blobs) and the chain verifies
    locals_ = store.list_local_models(agg.run_id, round=2)
    assert sorted(m.num_samples for m in locals_) == [10, 20, 30]
    assert store.verify_lineage(agg.run_id).ok
    assert rejections(store, agg.run_id, "secagg_dropped") == []
