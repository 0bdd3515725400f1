"""Rounds per minute of the Ray executor against the number of Ray nodes, on one machine.

Each point is a fresh process that starts a ``ray.cluster_utils.Cluster`` (a head node
with no CPUs, so no client trains beside the driver, and N worker nodes of one CPU
each), joins it and runs a sim_vs_flower workload (Fashion-MNIST, Dirichlet(0.5) seed 0,
E=1, B=32, lr 0.05, central evaluation every round) with one CPU per client.

All the nodes are processes of this one machine and share its cores (2 here): more
nodes cannot train faster than the cores allow, so the table measures what each extra
node costs (its raylet, its object store, one more partial sum per round), not a
speed-up. Start-up (cluster, actors) is reported apart from the steady rounds.

    python -m benchmarks.ray_scaling                       # 1, 2, 3 nodes, logreg-1000
    python -m benchmarks.ray_scaling --nodes 1,2,3 --workload cnn-100 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTE = (
    "every Ray node is a process of this one machine and the nodes share its cores, so more nodes"
    " cannot train faster: rounds per minute here measure the overhead of each node, not a speed-up"
)


def one_point(workload: str, nodes: int, rounds: int, data_dir: str) -> dict[str, Any]:
    """Run the workload on a Cluster of ``nodes`` one-CPU worker nodes (in this process)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    from benchmarks.simbench import plain
    from fedloom import Environment, Evaluation, Recording, fedavg, simulate
    from fedloom.sim.config import SimConfig
    from fedloom.sim.ray_executor import RayExecutor
    from fedloom.sim.tasks import build_task

    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    cluster_seconds = time.perf_counter() - started
    w = plain.WORKLOADS[workload]
    clients, per_round = int(w["clients"]), int(w["per_round"])
    config = SimConfig(
        dataset="fmnist", data_dir=data_dir, model="cnn" if w["model"] == "cnn" else "logreg-torch",
        clients=clients, partition="dirichlet", alpha=plain.ALPHA, fraction=per_round / clients, rounds=rounds,
        epochs=plain.EPOCHS, batch_size=plain.BATCH, lr=float(w["lr"]), seed=plain.SEED,
    )  # fmt: skip
    task = build_task(config)
    ends: list[float] = []
    accuracy: list[float] = []

    class Clock:
        def on_start(self, info: Any) -> None:
            ends.append(time.perf_counter())

        def on_round(self, summary: Any) -> None:
            ends.append(time.perf_counter())
            accuracy.append(float(summary.metrics["accuracy"]))

        def on_finish(self, info: Any, end: Any) -> None:
            pass

    try:
        simulate(
            task.client_fn, clients, fedavg(config.fraction, per_round, config.epochs, config.batch_size, config.lr),
            rounds, seed=config.seed, initial_weights=task.initial_weights,
            environment=Environment(client_sizes=task.client_sizes), evaluation=Evaluation(task.evaluate_fn),
            executor=RayExecutor(), recording=Recording(store=None), observers=[Clock()],
        )  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()
    steady = ends[-1] - ends[1]  # rounds 2..R: the actors are up and hold client_fn
    return {
        "nodes": nodes,
        "cluster_start_seconds": cluster_seconds,
        "first_round_seconds": ends[1] - ends[0],
        "steady_rounds": rounds - 1,
        "steady_seconds": steady,
        "rounds_per_minute": 60.0 * (rounds - 1) / steady,
        "final_accuracy": accuracy[-1],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="1,2,3", help="node counts to measure, comma-separated")
    p.add_argument("--workload", default="logreg-1000")
    p.add_argument("--rounds", type=int, default=8, help="rounds per point (the first is start-up)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one point, print it
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_scaling.json"))
    args = p.parse_args()
    from fedloom.data.fashion_mnist import resolve_data_dir

    data_dir = str(resolve_data_dir(args.data_dir))
    if args.one:
        print("POINT " + json.dumps(one_point(args.workload, args.one, args.rounds, data_dir)), flush=True)
        return
    cmdline = "python -m benchmarks.ray_scaling " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: {cmdline}\nnote: {NOTE}", flush=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}", "RAY_USAGE_STATS_ENABLED": "0"}
    points = []
    for nodes in [int(n) for n in args.nodes.split(",")]:
        cmd = [sys.executable, "-m", "benchmarks.ray_scaling", "--one", str(nodes), "--workload", args.workload]
        cmd += ["--rounds", str(args.rounds), "--data-dir", data_dir]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("POINT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"{nodes} node(s) failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        point = json.loads(lines[-1][6:])
        points.append(point)
        print(
            f"  {nodes} node(s): {point['rounds_per_minute']:.1f} rounds/min (steady), first round"
            f" {point['first_round_seconds']:.1f} s, cluster start {point['cluster_start_seconds']:.1f} s,"
            f" acc {point['final_accuracy']:.4f}",
            flush=True,
        )
    report = {
        "benchmark": "ray_scaling",
        "command": cmdline,
        "note": NOTE,
        "workload": args.workload,
        "rounds": args.rounds,
        "machine": {"cores": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "points": points,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
