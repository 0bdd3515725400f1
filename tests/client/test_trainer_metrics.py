"""Every built-in trainer's evaluate reports auc, f1_macro and balanced_accuracy next to accuracy,
equal to scikit-learn's on the trainer's own predicted probabilities."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, roc_auc_score
from tabular_cases import gaussian_table

from fedloom.client import EvalConfig, FitConfig, NumpyLogisticTrainer

TOL = 1e-9
NEW_METRICS = {"auc", "f1_macro", "balanced_accuracy"}


def _expected(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(axis=1)
    if probs.shape[1] == 2:
        auc = roc_auc_score(y, probs[:, 1])
    else:
        auc = roc_auc_score(y, probs / probs.sum(axis=1, keepdims=True), multi_class="ovr", average="macro")
    return {
        "accuracy": float(np.mean(pred == y)),
        "auc": auc,
        "f1_macro": f1_score(y, pred, average="macro", zero_division=0),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
    }


@pytest.mark.parametrize("sizes", [[150, 30], [60, 50, 40]])
def test_numpy_logreg_reports_the_metrics_of_its_probabilities(sizes):
    x, y = gaussian_table(sizes, separation=1.0, seed=3)
    trainer = NumpyLogisticTrainer(x, y, len(sizes))
    weights = trainer.fit(trainer.get_weights(), FitConfig(epochs=2, batch_size=16, lr=0.1, seed=1)).weights
    got = trainer.evaluate(weights, EvalConfig())
    w, b = weights["weight"].astype(np.float64), weights["bias"].astype(np.float64)
    logits = x.astype(np.float64) @ w.T + b
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert set(got) == {"loss", "accuracy", "num_samples"} | NEW_METRICS
    for name, value in _expected(y, probs).items():
        assert got[name] == pytest.approx(value, abs=TOL), name
    assert got["loss"] == pytest.approx(log_loss(y, probs), abs=1e-9)


def test_a_single_class_evaluation_set_leaves_auc_out_and_reports_no_nan():
    x, y = gaussian_table([40, 10], seed=1)
    trainer = NumpyLogisticTrainer(x, y, 2, x_eval=x[y == 0], y_eval=y[y == 0])
    got = trainer.evaluate(trainer.get_weights(), EvalConfig())
    assert "auc" not in got and all(np.isfinite(v) for v in got.values())
    assert got["balanced_accuracy"] == 1.0  # the zero model predicts class 0: every eval row is right


torch = pytest.importorskip("torch")


@pytest.mark.torch
@pytest.mark.parametrize("sizes", [[150, 30], [60, 50, 40]])
def test_torch_trainer_reports_the_metrics_of_its_probabilities(sizes):
    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    x, y = gaussian_table(sizes, separation=1.0, seed=4)
    torch.manual_seed(0)
    trainer = TorchTrainer(build_model("mlp", (x.shape[1],), len(sizes)), x, y)
    weights = trainer.fit(trainer.get_weights(), FitConfig(epochs=2, batch_size=16, lr=0.1, seed=1)).weights
    got = trainer.evaluate(weights, EvalConfig(batch_size=7))  # several batches: one pass, concatenated
    with torch.no_grad():
        probs = trainer.model(torch.from_numpy(x)).double().softmax(dim=1).numpy()
    assert set(got) == {"loss", "accuracy", "num_samples"} | NEW_METRICS
    for name, value in _expected(y, probs).items():
        assert got[name] == pytest.approx(value, abs=TOL), name
