"""Class-weighted clients train in cohorts: each client's own weights in the vmapped loss, equal to
per-client training (cohort_cases.TOL), batched rather than quietly trained one by one."""

import logging

import numpy as np
import pytest
import torch
from cohort_cases import TOL, bn_model, compare, federation

from fedloom import fedavg
from fedloom.algorithms.registry import build_strategy
from fedloom.models import logistic_regression, mlp
from fedloom.sim.cohort import runner

pytestmark = pytest.mark.torch

UNEVEN = [37, 9, 20, 3, 64, 16]  # batch 8: short last batches, clients that stop early


def skewed(sizes, seed=0):
    """The cohort federation with a different, strong label skew per client (so weights differ)."""
    data = federation(sizes, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for x, y in data:
        keep = y.copy()
        keep[rng.random(len(y)) < 0.7] = rng.integers(0, 3)  # most rows to one class, chosen per client
        out.append((x, keep))
    return out


@pytest.fixture
def cohorts(monkeypatch):
    """The sizes of the cohorts train_cohort is called with (a fallback to one by one calls it never)."""
    monkeypatch.setattr(runner, "_said", set())
    sizes: list[int] = []
    real = runner.train_cohort

    def spy(settings, jobs):
        sizes.append(len(jobs))
        return real(settings, jobs)

    monkeypatch.setattr(runner, "train_cohort", spy)
    return sizes


@pytest.mark.parametrize(
    "build",
    [lambda: mlp((1, 8, 8), 3, hidden=(16,)), lambda: logistic_regression((1, 8, 8), 3), bn_model],
    ids=["mlp-masked", "logreg-masked", "batchnorm-grouped"],
)
@pytest.mark.parametrize("class_weight", ["balanced", "1,5,0.5"])
def test_weighted_clients_match_per_client_training_in_one_cohort(build, class_weight, cohorts, caplog):
    caplog.set_level(logging.INFO, logger="fedloom.sim.cohort")
    torch.manual_seed(0)
    per_client, cohort, diff = compare(
        fedavg(1.0, 1, 2, 8, 0.1), build(), skewed(UNEVEN), cohort=6, class_weight=class_weight
    )
    assert diff <= TOL
    assert cohorts == [6]  # all six clients in one batched call
    assert not [r for r in caplog.records if r.name == "fedloom.sim.cohort"]
    for a, b in zip(per_client, cohort, strict=True):
        assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-5)
        assert b.metrics["train_accuracy"] == pytest.approx(a.metrics["train_accuracy"], abs=1e-12)


def test_the_weights_change_the_result():
    torch.manual_seed(0)
    _, weighted, _ = compare(fedavg(1.0, 1, 2, 8, 0.1), mlp((1, 8, 8), 3, hidden=(16,)), skewed(UNEVEN),
                             cohort=6, class_weight="balanced")  # fmt: skip
    torch.manual_seed(0)
    _, plain, _ = compare(fedavg(1.0, 1, 2, 8, 0.1), mlp((1, 8, 8), 3, hidden=(16,)), skewed(UNEVEN), cohort=6)
    moved = [float(np.abs(a.weights[k] - b.weights[k]).max()) for a, b in zip(weighted, plain, strict=True)
             for k in a.weights]  # fmt: skip
    assert max(moved) > 1e-3


def test_fisher_and_initial_loss_use_each_clients_weighted_loss(tmp_path, cohorts):
    """FedCurv's Fisher report and q-FedAvg's initial loss, from the class-weighted objective, per client."""
    for name in ("fedcurv", "qfedavg"):
        make = lambda n=name: build_strategy(n, fraction=1.0, min_clients=1, epochs=1, batch_size=8, lr=0.1)  # noqa: E731
        dirs = (str(tmp_path / name / "per-client"), str(tmp_path / name / "cohort"))
        torch.manual_seed(0)
        per_client, cohort, diff = compare(make(), mlp((1, 8, 8), 3, hidden=(8,)), skewed(UNEVEN), dirs,
                                           rounds=2, cohort=6, class_weight="balanced")  # fmt: skip
        assert diff <= TOL, name
        for a, b in zip(per_client, cohort, strict=True):
            for key in set(a.metrics) & {"initial_loss"}:
                assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-5)
    assert cohorts and min(cohorts) == 6


@pytest.mark.parametrize("build", [lambda: mlp((1, 8, 8), 3, hidden=(16,)), bn_model], ids=["masked", "grouped"])
def test_weighted_and_unweighted_clients_share_a_cohort(build, cohorts):
    """Odd clients weighted, even ones plain (the plain mean is the weighted mean with ones)."""
    from cohort_cases import max_difference, run_rounds

    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.sim.executor import SequentialExecutor

    torch.manual_seed(0)
    model, data = build(), skewed(UNEVEN)
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def make(i):
        return TorchTrainer(model, *data[i], class_weight="balanced" if i % 2 else "none")

    runs = []
    for executor in (SequentialExecutor("off"), SequentialExecutor(6)):
        torch.manual_seed(0)
        runs.append(run_rounds(fedavg(1.0, 1, 2, 8, 0.1), make, len(data), initial, executor)[0])
    assert max_difference(*runs) <= TOL
    assert cohorts == [6]
