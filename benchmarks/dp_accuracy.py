"""Accuracy against ε on Fashion-MNIST: a non-private baseline and sample-level DP-SGD, side by side.

Sized for two shared CPU cores, and said so: a seeded subset of the training set
(default 12,000 images, IID over 20 clients of 600), the torch logistic-regression
model, every client in every round, E=1, B=64, client lr 0.1, 10 rounds, seed 0,
accuracy on the full 10,000-image test set. DP-SGD clips each example's gradient to
C=1 and runs at three noise multipliers; each reports the ε its worst client reached
at δ=1e-5 (sample level: one example of one client, add/remove), from the privacy
accountant composing that client's Poisson-sampled steps (q = B/n).

Every row is a :class:`Contender`: a name, the level of privacy it claims, a function that
turns the baseline strategy into its own and, for user-level DP, the ``PrivacySettings``.
``--table user`` is the user-level table: central DP-FedAvg needs far more clients than 20
for its ε to mean anything (the noise must hide one whole client among those drawn), so it
runs on the whole training set split over 2,000 clients of 30 images, 100 drawn per round
(fraction 0.05), 20 rounds, update clip C=0.5, at three noise multipliers, against the
non-private baseline on the same federation; ε at δ=1e-5 is user level (replace one client).

    python -m benchmarks.dp_accuracy                 # writes benchmarks/results/dp_accuracy.json
    python -m benchmarks.dp_accuracy --table user    # writes benchmarks/results/dp_accuracy_user.json
    python -m benchmarks.dp_accuracy --rounds 2 --examples 2000 --out /tmp/dp.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.algorithms.dp import PrivacySettings
from fedloom.algorithms.dp_sgd_settings import DPSGDSettings, with_dp_sgd
from fedloom.algorithms.registry import build_strategy
from fedloom.algorithms.strategy import Strategy
from fedloom.client.dp_sgd import EPSILON_METRIC
from fedloom.client.torch_trainer import TorchTrainer
from fedloom.core.fit import EvalConfig
from fedloom.core.weights import Weights
from fedloom.data import load_dataset
from fedloom.sim import simulate
from fedloom.sim.options import Environment, Evaluation, Recording
from fedloom.sim.partition import partition

ROOT = Path(__file__).resolve().parent.parent
DELTA = 1e-5
CLIP = 1.0
USER_EPSILON = "privacy/epsilon"
#: central DP's clip of each client's update (L2, all float tensors)
USER_CLIP = 0.5


@dataclass(frozen=True)
class Contender:
    """One row of the table: how it changes the baseline strategy, and what privacy it claims."""

    name: str
    level: str  # "none", "sample" (DP-SGD) or "user" (central DP)
    make: Callable[[Strategy], Strategy]
    privacy: PrivacySettings | None = None


def dp_sgd(noise: float) -> Contender:
    settings = DPSGDSettings(noise_multiplier=noise, max_grad_norm=CLIP, delta=DELTA)
    return Contender(f"DP-SGD z={noise}", "sample", lambda s: with_dp_sgd(s, settings))


def central(noise: float) -> Contender:
    settings = PrivacySettings(mode="central", noise_multiplier=noise, clip_norm=USER_CLIP, delta=DELTA)
    return Contender(f"central DP z={noise}", "user", lambda s: s, settings)


CONTENDERS: tuple[Contender, ...] = (
    Contender("no DP (FedAvg)", "none", lambda s: s),
    dp_sgd(0.6),
    dp_sgd(1.0),
    dp_sgd(2.0),
)
#: ``--table user``: the federation is set by USER_LEVEL below
USER_CONTENDERS: tuple[Contender, ...] = (
    Contender("no DP (FedAvg)", "none", lambda s: s),
    central(1.0),
    central(2.0),
    central(4.0),
)
USER_LEVEL = {"examples": 60000, "clients": 2000, "fraction": 0.05, "rounds": 20, "lr": 0.5}


@dataclass(frozen=True)
class Federation:
    """The subset, its IID split, the model and the central test-set evaluator, built once."""

    client_fn: Callable[[int], TorchTrainer]
    evaluate: Callable[[Weights], Mapping[str, float]]
    initial: Weights
    sizes: list[int]


def federation(args: argparse.Namespace) -> Federation:
    import torch

    from fedloom.models import build_model

    data = load_dataset("fmnist", args.data_dir, compact=True)
    chosen = np.sort(np.random.default_rng(args.seed).choice(len(data.train), args.examples, replace=False))
    parts = [chosen[p] for p in partition("iid", data.train.y[chosen], args.clients, args.seed)]
    torch.manual_seed(args.seed)
    model = build_model(args.model, data.input_shape, data.num_classes)
    test = data.test.materialised()

    def client_fn(index: int) -> TorchTrainer:
        local = data.train.subset(parts[index])
        return TorchTrainer(model, local.x, local.y)

    evaluator = TorchTrainer(model, test.x[:1], test.y[:1], x_eval=test.x, y_eval=test.y)

    def evaluate(weights: Weights) -> Mapping[str, float]:
        return {k: v for k, v in evaluator.evaluate(weights, EvalConfig()).items() if k != "num_samples"}

    return Federation(client_fn, evaluate, evaluator.get_weights(), [len(p) for p in parts])


def run(contender: Contender, fed: Federation, args: argparse.Namespace) -> dict[str, Any]:
    base = build_strategy("fedavg", fraction=args.fraction, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    started = time.perf_counter()
    result = simulate(
        fed.client_fn,
        args.clients,
        contender.make(base),
        args.rounds,
        seed=args.seed,
        initial_weights=fed.initial,
        environment=Environment(client_sizes=fed.sizes),
        evaluation=Evaluation(fed.evaluate),
        recording=Recording(store=None),
        observers=[],
        privacy=contender.privacy,
    )
    seconds = time.perf_counter() - started
    accuracy = [h.metrics["accuracy"] for h in result.history]
    metric = USER_EPSILON if contender.level == "user" else EPSILON_METRIC
    epsilon = [h.metrics.get(metric) for h in result.history]
    row = {"name": contender.name, "privacy_level": contender.level, "final_accuracy": accuracy[-1]}
    row |= {"epsilon": epsilon[-1], "delta": DELTA if contender.level != "none" else None}
    row |= {"accuracy_curve": accuracy, "epsilon_curve": epsilon, "seconds": round(seconds, 1)}
    shown = "inf (no DP)" if epsilon[-1] is None else f"{epsilon[-1]:.2f}"
    print(f"  {contender.name:<18} accuracy {accuracy[-1]:.4f}  ε {shown:<12} ({seconds:.0f} s)", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="logreg-torch", choices=("logreg-torch", "mlp", "cnn"))
    parser.add_argument("--examples", type=int, default=12000, help="training images used (a seeded subset)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the clients drawn each round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", choices=("sample", "user"), default="sample", help="DP-SGD or central DP rows")
    parser.add_argument("--out", default=None, help="default benchmarks/results/dp_accuracy[_user].json")
    args = parser.parse_args(argv)
    given = set(argv if argv is not None else sys.argv[1:])
    if args.table == "user":  # the user-level federation, unless a flag says otherwise
        for key, value in USER_LEVEL.items():
            if f"--{key}" not in given:
                setattr(args, key, value)
    suffix = "_user" if args.table == "user" else ""
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"dp_accuracy{suffix}.json")
    # dp-accounting logs each fractional RDP order it drops (its ε stays an upper bound)
    logging.getLogger("absl").setLevel(logging.ERROR)
    fed = federation(args)
    print(f"Fashion-MNIST subset of {args.examples}, {args.clients} clients, {args.rounds} rounds", flush=True)
    rows = [run(contender, fed, args) for contender in (USER_CONTENDERS if args.table == "user" else CONTENDERS)]
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    out = {
        "benchmark": "dp_accuracy",
        "command": shlex.join(["python", "-m", "benchmarks.dp_accuracy", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**settings, "partition": "iid", "clip": USER_CLIP if args.table == "user" else CLIP},
        "client_sizes": fed.sizes,
        "epsilon_is": (
            "privacy/epsilon: user level, replace one client, clients drawn without replacement (RDP)"
            if args.table == "user"
            else "the largest privacy/dp_sgd_epsilon over the clients (sample level, add/remove one example)"
        ),
        "table": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
