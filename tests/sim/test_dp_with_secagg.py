"""Issue 11: client-side DP composes with secure aggregation. Each client clips its update and
adds its share of the noise; under SecAgg the clients enter the masked sum with weight 1 and the
DP aggregator divides the unmasked sum by its fixed denominator, so the run equals the same DP
run without SecAgg within the quantisation bound, and ε is accounted and stored the same way.
Central DP (the server clips each update) cannot run under SecAgg and is refused, saying why."""

from __future__ import annotations

import numpy as np
import pytest

import fedloom
from fedloom.algorithms.dp import PrivacySettings
from fedloom.algorithms.secagg import SecAggSettings
from fedloom.algorithms.secagg.ring import error_bound
from fedloom.core.errors import ConfigError
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import build_task
from fedloom.store import SqlStore

pytest.importorskip("dp_accounting")
pytest.importorskip("cryptography")

CLIENTS, ROUNDS = 12, 3


def run(tmp_path, name, privacy, secure=None):
    cfg = SimConfig(dataset="digits", model="logreg", clients=CLIENTS, partition="iid", rounds=ROUNDS, seed=0, lr=0.5)
    task = build_task(cfg)
    with SqlStore.open_default(tmp_path / name) as store:
        result = fedloom.simulate(
            task.client_fn,
            CLIENTS,
            fedloom.fedavg(fraction=0.5, epochs=1, batch_size=16, lr=cfg.lr),
            ROUNDS,
            seed=0,
            initial_weights=task.initial_weights,
            environment=fedloom.Environment(client_sizes=task.client_sizes),
            recording=fedloom.Recording(store=store),
            observers=[],
            privacy=privacy,
            secure=secure,
        )
        epsilons = store.metric_series(result.run_id, "privacy/epsilon")
        samples = [r.num_samples for r in store.list_rounds(result.run_id)]
    return result, epsilons, samples


@pytest.mark.parametrize("mode", ["client", "local"])
def test_client_side_dp_under_secagg_equals_it_without_within_the_bound(tmp_path, mode):
    privacy = PrivacySettings(mode=mode, noise_multiplier=0.3, clip_norm=1.0, delta=1e-3, noise_seed=4)
    secure = SecAggSettings(clip_range=2.0, bits=32, threshold=0.6)
    plain, plain_eps, plain_samples = run(tmp_path, "plain", privacy)
    masked, masked_eps, masked_samples = run(tmp_path, "masked", privacy, secure)
    assert masked_eps == plain_eps and len(masked_eps) == ROUNDS  # the same rounds accounted the same way
    assert masked_samples == plain_samples
    bound = error_bound(2.0, 32)
    initial = build_task(SimConfig(dataset="digits", model="logreg", clients=CLIENTS, seed=0)).initial_weights
    moved = 0.0
    for name, value in plain.final_weights.items():
        got = masked.final_weights[name]
        assert got.dtype == value.dtype and got.shape == value.shape
        difference = np.max(np.abs(got.astype(np.float64) - value))
        # each round adds at most the bound to the mean; a logistic step is not contracting, so allow
        # the bound per round times a generous factor (float32 rounding on top)
        assert difference <= ROUNDS * 10 * bound + 1e-5, name
        moved = max(moved, float(np.max(np.abs(value - initial[name]))))
    assert moved > 0.01  # the models did train: the comparison is not between two untouched models


def test_a_wrong_weight_in_the_masked_sum_is_refused_not_aggregated():
    """A client that enters the DP sum with its sample count instead of 1 would change the
    sensitivity the accountant assumed; the server checks Σ weights == number of contributors."""
    from fedloom.algorithms.secagg.server import SecAggResult
    from fedloom.server.rounds.secure import Contribution, SecureRounds

    result = SecAggResult({"w": np.zeros(2)}, total_weight=7, contributors=("a", "b"))
    contributions = {"a": Contribution(3, {}), "b": Contribution(4, {})}
    problem = SecureRounds._mismatch(result, contributions, uniform=True)
    assert problem is not None and "weighted 1" in problem
    assert SecureRounds._mismatch(result, contributions, uniform=False) is None


def test_central_dp_with_secagg_is_refused_naming_client_mode(tmp_path):
    privacy = PrivacySettings(mode="central", noise_multiplier=0.3, clip_norm=1.0, delta=1e-3)
    with pytest.raises(ConfigError, match="use client-side DP"):
        run(tmp_path, "central", privacy, SecAggSettings())
