"""Client-side terms in a cohort: FedProx's proximal term, SCAFFOLD's correction, FedCurv's penalty
(and Fisher report), q-FedAvg's initial loss, each equal per client to per-client training.

Two rounds where the term is zero in round 1 (SCAFFOLD's control variates, FedCurv's
Fisher sums start at zero), so round 2 trains with non-zero, per-client terms.
"""

import numpy as np
import pytest
import torch
from cohort_cases import TOL, bn_model, compare, federation

from fedloom.algorithms.fedcurv import FISHER_SUM_PREFIX
from fedloom.algorithms.registry import build_strategy
from fedloom.models import cnn, mlp

pytestmark = pytest.mark.torch

UNEVEN = [37, 9, 20, 3, 16]


def strategy(name, **params):
    return build_strategy(name, fraction=1.0, min_clients=1, epochs=1, batch_size=8, lr=0.1, params=params)


def test_fedprox_proximal_term_per_client():
    torch.manual_seed(0)
    _, cohort, diff = compare(strategy("fedprox", proximal_mu=0.5), mlp((1, 8, 8), 3, hidden=(8,)),
                                       federation(UNEVEN), rounds=2)  # fmt: skip
    assert diff <= TOL
    torch.manual_seed(0)  # the term changes the result: without it the same run ends elsewhere
    _, plain, _ = compare(strategy("fedavg"), mlp((1, 8, 8), 3, hidden=(8,)), federation(UNEVEN), rounds=2)
    pairs = zip(cohort, plain, strict=True)
    moved = [float(np.abs(a.weights[k] - b.weights[k]).max()) for a, b in pairs for k in a.weights]
    assert max(moved) > 1e-3


def test_scaffold_control_variates_per_client(tmp_path):
    torch.manual_seed(0)
    dirs = (str(tmp_path / "per-client"), str(tmp_path / "cohort"))
    _, cohort, diff = compare(strategy("scaffold"), cnn((1, 8, 8), 3), federation(UNEVEN), dirs, rounds=2)
    assert diff <= TOL
    sent = [k for k in cohort[0].weights if k.startswith("fedloom.")]
    assert sent  # the control-variate deltas travel beside the model and match too
    assert any(np.abs(cohort[0].weights[k]).max() > 0 for k in sent)


def test_fedcurv_penalty_and_fisher_per_client(tmp_path):
    torch.manual_seed(0)
    dirs = (str(tmp_path / "per-client"), str(tmp_path / "cohort"))
    _, cohort, diff = compare(strategy("fedcurv", curvature_lambda=10.0), bn_model(), federation(UNEVEN),
                                       dirs, rounds=2)  # fmt: skip
    assert diff <= TOL
    sums = [k for k in cohort[0].weights if k.startswith(FISHER_SUM_PREFIX)]
    assert sums and any(np.abs(cohort[0].weights[k]).max() > 0 for k in sums)  # built from the cohort's Fisher


def test_qfedavg_initial_loss_per_client():
    torch.manual_seed(0)
    per_client, cohort, diff = compare(strategy("qfedavg", q=0.2), mlp((1, 8, 8), 3, hidden=(8,)), federation(UNEVEN))
    assert diff <= TOL
    for a, b in zip(per_client, cohort, strict=True):
        assert b.metrics["initial_loss"] == pytest.approx(a.metrics["initial_loss"], rel=1e-6)
