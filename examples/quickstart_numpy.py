"""Quickstart: the smallest complete FedAvg simulation, in pure NumPy (no PyTorch).

What it shows:

* load scikit-learn's 8x8 digits with :func:`fedloom.data.load_digits`;
* split the training set among 20 clients with label skew, Dirichlet(alpha=0.5),
  using :func:`fedloom.sim.partition.partition`;
* build each client's :class:`fedloom.NumpyLogisticTrainer` on demand in ``client_fn(i)``
  (an idle client costs nothing);
* evaluate the global model centrally on the test set after every round;
* run :func:`fedloom.fedavg` (half the clients per round) with :func:`fedloom.simulate`.

Run it (about 5 seconds on a laptop)::

    python examples/quickstart_numpy.py
    python examples/quickstart_numpy.py --rounds 50 --alpha 0.1

Nothing is written to disk unless you pass ``--home DIR``; then the run (every round,
every global model, every metric) is recorded in ``DIR`` and can be inspected with
``fedloom runs show RUN_ID --home DIR`` or read back with ``examples/load_global_model.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

import fedloom
from fedloom.data import DatasetSplits, load_digits
from fedloom.sim import partition
from fedloom.store import SqlStore


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="number of simulated clients (default: 20)")
    parser.add_argument("--rounds", type=int, default=20, help="FedAvg rounds (default: 20)")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew; smaller = more skewed")
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of clients sampled per round")
    parser.add_argument("--lr", type=float, default=0.5, help="client learning rate (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for partition, sampling and shuffling")
    parser.add_argument("--home", metavar="DIR", help="record the run in this store directory")
    return parser.parse_args()


def make_client_fn(data: DatasetSplits, num_clients: int, alpha: float, seed: int) -> Callable[[int], fedloom.Trainer]:
    """Partition the training set once; ``client_fn(i)`` builds client ``i``'s trainer when asked."""
    parts = partition("dirichlet", data.train.y, num_clients, seed, alpha=alpha)

    def client_fn(i: int) -> fedloom.Trainer:
        shard = data.train.subset(parts[i])
        return fedloom.NumpyLogisticTrainer(shard.x, shard.y, data.num_classes)

    return client_fn


def make_evaluate_fn(data: DatasetSplits) -> Callable[[fedloom.Weights], Mapping[str, float]]:
    """Central evaluation: the global model's loss and accuracy on the held-out test set."""
    evaluator = fedloom.NumpyLogisticTrainer(data.test.x, data.test.y, data.num_classes)
    return lambda weights: evaluator.evaluate(weights, fedloom.EvalConfig())


def main() -> None:
    args = parse_args()
    data = load_digits()
    store = SqlStore.open_default(args.home) if args.home else None
    result = fedloom.simulate(
        make_client_fn(data, args.clients, args.alpha, args.seed),
        args.clients,
        fedloom.fedavg(fraction=args.fraction, lr=args.lr, batch_size=16),
        rounds=args.rounds,
        seed=args.seed,
        evaluation=fedloom.Evaluation(make_evaluate_fn(data)),
        recording=fedloom.Recording(store=store, run_name="quickstart-numpy"),
    )
    print(f"final accuracy: {result.final_metrics['accuracy']:.4f}")
    if store is not None:
        store.close()
        print(f"run id: {result.run_id}")
        print(f"inspect it with: fedloom runs show {result.run_id} --home {args.home}")


if __name__ == "__main__":
    main()
