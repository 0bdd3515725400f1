"""Client-side evaluation averages each metric over the clients that report it: a client whose local
data holds one class has no ``auc``, and must not pull the mean toward 0."""

import numpy as np
import pytest
from tabular_data import one_class_and_mixed_clients

from fedloom.algorithms.strategy import ClientSettings
from fedloom.client import NumpyLogisticTrainer
from fedloom.sim.client_eval import ClientEvaluation


def test_auc_is_averaged_over_the_clients_that_have_it():
    trainers, weights = one_class_and_mixed_clients()
    evaluation = ClientEvaluation(fraction=1.0, client=ClientSettings(), seed=0)
    means, per_client = evaluation.run(lambda i: trainers[i], weights, len(trainers), round_no=1)
    assert "client_auc" not in per_client["0"] and "client_auc" in per_client["1"]
    assert means["client_auc"] == pytest.approx(per_client["1"]["client_auc"])
    sizes = [len(t.y_eval) for t in trainers]
    expected_accuracy = np.average([per_client[str(i)]["client_accuracy"] for i in range(2)], weights=sizes)
    assert means["client_accuracy"] == pytest.approx(expected_accuracy)
    assert all(np.isfinite(v) for v in means.values())


def test_clients_sharing_every_metric_keep_the_plain_sample_weighted_mean():
    trainers, weights = one_class_and_mixed_clients(single=False)
    evaluation = ClientEvaluation(fraction=1.0, client=ClientSettings(), seed=0)
    means, per_client = evaluation.run(lambda i: trainers[i], weights, 2, round_no=1)
    sizes = [len(t.y_eval) for t in trainers]
    for key in ("client_auc", "client_loss", "client_f1_macro"):
        assert means[key] == pytest.approx(np.average([per_client[str(i)][key] for i in range(2)], weights=sizes))
    assert isinstance(trainers[0], NumpyLogisticTrainer)
