"""After one round, every client's weights from cohort training equal per-client training's.

Bound: max |Δ| <= cohort_cases.TOL (1e-5) over every tensor of every client; see there why.
Each model runs clients of uneven sizes (short last batches, clients that stop early).
"""

import numpy as np
import pytest
import torch
from cohort_cases import TOL, bn_model, compare, federation
from torch import nn

from fedloom import fedavg
from fedloom.models import cnn, logistic_regression, mlp
from fedloom.sim.cohort.train import uses_masking

pytestmark = pytest.mark.torch

UNEVEN = [37, 9, 20, 3, 64, 16]  # batch 8: 5, 2, 3, 1, 8, 2 steps per epoch; short last batches


def strategy(epochs=1, lr=0.1):
    return fedavg(1.0, 1, epochs, 8, lr)


@pytest.mark.parametrize(
    "build",
    [
        lambda: cnn((1, 8, 8), 3),
        lambda: mlp((1, 8, 8), 3, hidden=(16, 16)),
        lambda: logistic_regression((1, 8, 8), 3),
        bn_model,
    ],
    ids=["cnn", "mlp", "logreg", "batchnorm"],
)
def test_every_model_matches_per_client_training(build):
    torch.manual_seed(0)
    model = build()
    start = {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}
    per_client, cohort, diff = compare(strategy(epochs=2), model, federation(UNEVEN))
    assert diff <= TOL
    moved = max(float(np.abs(u.weights[k] - v).max()) for u in per_client for k, v in start.items())
    assert moved > 1e-3  # training did change the weights: the comparison is not of two copies of the start
    for a, b in zip(per_client, cohort, strict=True):
        assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-5)
        assert b.metrics["train_accuracy"] == pytest.approx(a.metrics["train_accuracy"], abs=1e-12)


def test_batchnorm_running_statistics_and_counter_are_per_client():
    model = bn_model()
    _, cohort, diff = compare(strategy(), model, federation(UNEVEN))
    assert diff <= TOL
    counters = [int(u.weights["1.num_batches_tracked"]) for u in cohort]
    assert counters == [5, 2, 3, 1, 8, 2]  # each client's own number of steps, a 0-d int64
    assert all(u.weights["1.num_batches_tracked"].dtype == np.int64 for u in cohort)
    means = [u.weights["1.running_mean"] for u in cohort]
    assert not np.allclose(means[0], means[1])  # not one shared statistic
    assert not uses_masking(model, nn.functional.cross_entropy)  # grouped by batch length, never padded


def test_clients_that_finish_early_keep_their_weights_and_nobody_elses_change():
    """A client alone in a cohort, or beside others that train longer, ends the same."""
    data = federation([3, 64])
    torch.manual_seed(0)
    _, together, _ = compare(strategy(), mlp((1, 8, 8), 3, hidden=(8,)), data)
    torch.manual_seed(0)  # the same initial model again (training moved the shared module's weights)
    _, alone, _ = compare(strategy(), mlp((1, 8, 8), 3, hidden=(8,)), data[:1])
    assert together[0].metrics["local_steps"] == 1.0
    for name, value in alone[0].weights.items():
        np.testing.assert_allclose(together[0].weights[name], value, rtol=0, atol=TOL)


@pytest.mark.parametrize(
    ("optimizer", "momentum", "weight_decay"),
    [("sgd", 0.9, 0.0), ("sgd", 0.9, 0.01), ("sgd", 0.0, 0.05), ("adam", 0.0, 0.0), ("adam", 0.0, 0.01)],
)
def test_optimisers_match_torch_optim_per_client(optimizer, momentum, weight_decay):
    torch.manual_seed(0)
    model = cnn((1, 8, 8), 3)
    lr = 0.01 if optimizer == "adam" else 0.05
    kwargs = {"optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay}
    _, _, diff = compare(strategy(epochs=1, lr=lr), model, federation(UNEVEN), **kwargs)
    assert diff <= TOL


def test_batchnorm_with_momentum_and_adam():
    _, _, diff = compare(strategy(), bn_model(), federation(UNEVEN), optimizer="sgd", momentum=0.9)
    assert diff <= TOL
    _, _, diff = compare(strategy(lr=0.01), bn_model(), federation(UNEVEN), optimizer="adam")
    assert diff <= TOL


@pytest.mark.parametrize("cohort", [1, 2, 3, 100])
def test_cohort_size_does_not_change_any_result(cohort):
    torch.manual_seed(0)
    model = mlp((1, 8, 8), 3, hidden=(8,))
    _, _, diff = compare(strategy(), model, federation(UNEVEN), cohort=cohort)
    assert diff <= TOL


def smoothed_cross_entropy(out, y):
    """A user's own loss (not TorchTrainer's default): the cohort vmaps it over the clients."""
    return nn.functional.cross_entropy(out, y, label_smoothing=0.1)


@pytest.mark.parametrize("build", [lambda: mlp((1, 8, 8), 3, hidden=(8,)), bn_model], ids=["mlp", "batchnorm"])
def test_a_users_loss_matches_per_client_training(build):
    torch.manual_seed(0)
    model = build()
    per_client, cohort, diff = compare(strategy(), model, federation(UNEVEN), loss=smoothed_cross_entropy)
    assert 0 < diff <= TOL  # batched (not fallen back to the per-client code), and equal within the bound
    for a, b in zip(per_client, cohort, strict=True):
        assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-5)
