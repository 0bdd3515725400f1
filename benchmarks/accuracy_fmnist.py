"""FedAvg on Fashion-MNIST with the reference CNN: IID vs Dirichlet(0.5) vs 2-class shards.

100 clients, C=0.1, E=1, B=32, 50 rounds (McMahan et al. 2017's protocol on a small CNN).
Prints the command that produced the numbers, a table, and writes JSON to
benchmarks/results/accuracy_fmnist.json. Not part of the test suite (minutes of compute).

    python benchmarks/accuracy_fmnist.py                 # CPU, all three partitions
    python benchmarks/accuracy_fmnist.py --device cuda   # same experiment on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from fedloom import Environment, Evaluation, Recording, fedavg, simulate
from fedloom.sim.config import SimConfig
from fedloom.sim.progress import ProgressPrinter
from fedloom.sim.tasks import build_task

PARTITIONS = {
    "iid": {"partition": "iid"},
    "dirichlet-0.5": {"partition": "dirichlet", "alpha": 0.5},
    "shards-2": {"partition": "shards", "classes_per_client": 2},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--partitions", default=",".join(PARTITIONS), help=f"comma list of {list(PARTITIONS)}")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "accuracy_fmnist.json"))
    return p.parse_args()


def run_one(label: str, args: argparse.Namespace) -> dict[str, object]:
    config = SimConfig(
        dataset="fmnist",
        data_dir=args.data_dir,
        model="cnn",
        clients=args.clients,
        fraction=args.fraction,
        rounds=args.rounds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        **PARTITIONS[label],  # type: ignore[arg-type]
    )
    task = build_task(config)
    strategy = fedavg(config.fraction, 1, config.epochs, config.batch_size, config.lr)
    print(f"\n== {label} ==", file=sys.stderr)
    started = time.perf_counter()
    result = simulate(
        task.client_fn,
        config.clients,
        strategy,
        config.rounds,
        seed=config.seed,
        initial_weights=task.initial_weights,
        environment=Environment(client_sizes=task.client_sizes),
        evaluation=Evaluation(task.evaluate_fn),
        recording=Recording(store=None),
        observers=[ProgressPrinter(config.rounds, sys.stderr)],
    )
    accuracy = [a for _, a in result.series("accuracy")]
    return {
        "partition": label,
        "final_accuracy": accuracy[-1],
        "best_accuracy": max(accuracy),
        "accuracy_by_round": accuracy,
        "wall_seconds": time.perf_counter() - started,
        "client_sizes_min_max": [min(task.client_sizes), max(task.client_sizes)],
    }


def main() -> None:
    args = parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"command: {command}")
    import torch

    results = [run_one(label, args) for label in args.partitions.split(",")]
    report = {
        "benchmark": "accuracy_fmnist",
        "command": command,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")},
        "machine": {
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'partition':<15} {'final acc':>9} {'best acc':>9} {'wall s':>8}")
    for r in results:
        print(f"{r['partition']:<15} {r['final_accuracy']:>9.2%} {r['best_accuracy']:>9.2%} {r['wall_seconds']:>8.1f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
