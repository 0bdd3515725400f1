"""A user's own Trainer gets FedProx and SCAFFOLD through the one hook (``terms``) and nothing else."""

import numpy as np
import pytest

from fedloom import simulate
from fedloom.algorithms.registry import build_strategy
from fedloom.client.batching import epoch_batches
from fedloom.core.errors import ClientError
from fedloom.core.fit import FitResult
from fedloom.core.terms import NO_TERMS
from fedloom.sim.config import SimConfig
from fedloom.sim.options import Evaluation, Recording
from fedloom.sim.tasks import build_task


class UserSoftmax:
    """A user's softmax regression: knows no algorithm, only adds ``terms.gradient`` to its gradients."""

    def __init__(self, x, y, classes):
        self.x, self.y, self.classes = x.reshape(len(x), -1).astype(np.float64), y, classes

    def get_weights(self):
        return {
            "weight": np.zeros((self.classes, self.x.shape[1]), np.float32),
            "bias": np.zeros(self.classes, np.float32),
        }

    def fit(self, weights, config, terms=NO_TERMS):
        w, b = weights["weight"].astype(np.float64), weights["bias"].astype(np.float64)
        rng, steps = np.random.default_rng(config.seed), 0
        for _ in range(config.epochs):
            for idx in epoch_batches(len(self.x), config.batch_size, rng):
                logits = self.x[idx] @ w.T + b
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                g = (p - np.eye(self.classes)[self.y[idx]]) / len(idx)
                extra_w, extra_b = terms.gradient("weight", w), terms.gradient("bias", b)
                w -= config.lr * (g.T @ self.x[idx] + (0.0 if extra_w is None else extra_w))
                b -= config.lr * (g.sum(axis=0) + (0.0 if extra_b is None else extra_b))
                steps += 1
        trained = {"weight": w.astype(np.float32), "bias": b.astype(np.float32)}
        return FitResult(trained, len(self.x), {"local_steps": float(steps)})

    def evaluate(self, weights, config):
        return {}


class TwoArgumentTrainer(UserSoftmax):
    def fit(self, weights, config):
        return super().fit(weights, config)


TASK = build_task(SimConfig(dataset="digits", clients=6, partition="shards", seed=0))


def run(name, params, make):
    strategy = build_strategy(name, fraction=0.5, lr=0.5, batch_size=16, params=params)

    def client_fn(i):
        builtin = TASK.client_fn(i)
        return builtin if make is None else make(builtin.x, builtin.y, 10)

    quiet = {"recording": Recording(store=None), "observers": []}
    result = simulate(client_fn, 6, strategy, 3, initial_weights=TASK.initial_weights, **quiet)
    return result.final_weights


@pytest.mark.parametrize(("name", "params"), [("scaffold", {}), ("fedprox", {"proximal_mu": 0.5})])
def test_a_user_trainer_with_only_the_hook_matches_the_built_in_one(name, params):
    builtin, user = run(name, params, None), run(name, params, UserSoftmax)
    plain = run("fedavg", {}, None)
    for k in builtin:
        np.testing.assert_allclose(user[k], builtin[k], rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(builtin[k] - plain[k]).max()) for k in builtin) > 1e-3  # the term did change the model


def test_a_trainer_without_the_hook_is_told_what_to_add():
    with pytest.raises(ClientError, match=r"fit\(self, weights, config, terms=NO_TERMS\)"):
        run("scaffold", {}, TwoArgumentTrainer)
    run("fedavg", {}, TwoArgumentTrainer)  # strategies without client-side terms need no hook


@pytest.mark.torch
def test_the_example_pytorch_trainer_gets_scaffold_through_the_hook():
    """examples/custom_pytorch_trainer.py: a hand-written PyTorch Trainer, three lines of hook."""
    import importlib.util
    from pathlib import Path

    import fedloom
    from fedloom.data import load_digits
    from fedloom.sim.partition import partition

    path = Path(__file__).resolve().parents[2] / "examples" / "custom_pytorch_trainer.py"
    spec = importlib.util.spec_from_file_location("_custom_pytorch_trainer", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = load_digits()
    parts = partition("shards", data.train.y, 10, 0)
    evaluator = example.make_trainer(data.test.x, data.test.y)

    def accuracy(name):
        strategy = build_strategy(name, fraction=0.5, lr=0.2, batch_size=16)
        result = simulate(
            lambda i: example.make_trainer(data.train.subset(parts[i]).x, data.train.subset(parts[i]).y), 10,
            strategy, 10, evaluation=Evaluation(central=lambda w: evaluator.evaluate(w, fedloom.EvalConfig())),
            recording=Recording(store=None), observers=[],
        )  # fmt: skip
        return result.final_metrics["accuracy"]

    assert accuracy("scaffold") > accuracy("fedavg") + 0.1  # measured 0.784 vs 0.489 (2-class shards)
