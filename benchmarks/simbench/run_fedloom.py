"""fedloom on the workload: the built-in task, the parallel (or Ray) executor, or, with ``--cohort``,
the sequential executor training each round's clients as batched cohorts (``--executor parallel
--cohort auto``: every parallel worker trains its share as a cohort); the default SQLite store."""

from __future__ import annotations

import argparse
import json
import tempfile

from benchmarks.simbench import plain
from fedloom import Environment, Evaluation, Recording, fedavg, simulate
from fedloom.sim.config import SimConfig
from fedloom.sim.executor import Executor, SequentialExecutor
from fedloom.sim.parallel import ParallelExecutor
from fedloom.sim.tasks import build_task
from fedloom.store import SqlStore


def executor(args: argparse.Namespace) -> Executor:
    """The parallel executor (one forked worker per core; with ``--cohort``, each worker's share
    trained as a cohort), a local Ray of one CPU per core running one client per CPU (what
    Flower's Ray backend is given), or, for ``--cohort`` alone, the sequential executor."""
    if args.executor == "ray":
        from fedloom.sim.ray_executor import RayExecutor

        return RayExecutor(num_cpus=args.workers or None)
    if args.executor == "parallel" or not args.cohort:
        return ParallelExecutor(args.workers or None, cohort=args.cohort or "off")
    return SequentialExecutor(args.cohort)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--rounds", type=int)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--executor", choices=("parallel", "ray"), help="default: parallel, or sequential with --cohort")
    p.add_argument("--cohort", help="auto|N: cohort training (alone: the sequential executor, all cores via torch)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--overlap", action="store_true", help="evaluate round r while round r+1 trains")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    w = plain.WORKLOADS[args.workload]
    clients, per_round = int(w["clients"]), int(w["per_round"])
    config = SimConfig(
        dataset="fmnist",
        data_dir=args.data_dir,
        model="cnn" if w["model"] == "cnn" else "logreg-torch",
        clients=clients,
        partition="dirichlet",
        alpha=plain.ALPHA,
        fraction=per_round / clients,
        rounds=args.rounds or int(w["rounds"]),
        epochs=plain.EPOCHS,
        batch_size=plain.BATCH,
        lr=float(w["lr"]),
        seed=plain.SEED,
    )
    task = build_task(config)
    with tempfile.TemporaryDirectory() as home, SqlStore.open_default(home) as store:
        result = simulate(
            task.client_fn,
            clients,
            fedavg(config.fraction, per_round, config.epochs, config.batch_size, config.lr),
            config.rounds,
            seed=config.seed,
            initial_weights=task.initial_weights,
            environment=Environment(client_sizes=task.client_sizes),
            evaluation=Evaluation(task.evaluate_fn, overlap=args.overlap),
            executor=executor(args),
            recording=Recording(store=store),
        )
    print("RESULT " + json.dumps({"accuracy": [a for _, a in result.series("accuracy")]}))


if __name__ == "__main__":
    main()
