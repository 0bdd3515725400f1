"""Memory of the process-pool simulation as the number of clients grows (1,000 to 100,000).

The workload of tests/sim/test_memory.py: 200,000 x 64 float32 Gaussian features labelled
by a fixed random linear model (10 classes), split IID among the clients; 1% of them train
each round (NumPy logistic regression, E=1, B=10), 8 rounds, the parallel executor (one
worker per core unless --workers), no store. The dataset is the same at every size, so
any growth with the number of clients is the cost of idle clients (their index arrays)
and of the framework.

Each size runs in a fresh process. Reported per size:
  peak tree RSS / PSS  sampled from /proc every 0.1 s for the whole process tree (driver +
                       workers) from outside; RSS counts shared pages once per process,
                       PSS splits them (the memory really used)
  RSS / PSS round 1, round N   the tree, sampled at the end of round 1 and of the last round
  cost per extra client        slope of peak RSS / PSS between the smallest and largest size

RSS stays flat across rounds. PSS creeps up for a while at large sizes: the per-client
objects the workers inherited are shared at fork, and each page that a process later
touches (a refcount is a write) becomes its own copy. That is bounded by the size of those
objects, so it levels off (100,000 clients over 40 rounds: 176 -> 206 MiB, flat from round ~27).

    python -m benchmarks.memory_clients                       # 1,000 / 10,000 / 50,000 / 100,000 clients
    python -m benchmarks.memory_clients --clients 10000 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "memory_clients.json"
MIB = 1024 * 1024


# ----------------------------------------------------------------------------- one size, in its own process


def _kib(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def tree_memory() -> dict[str, float]:
    """RSS and PSS (MiB) of this process and its worker processes."""
    pids = [os.getpid(), *(p.pid for p in multiprocessing.active_children() if p.pid is not None)]
    return {
        "processes": len(pids),
        "rss_mib": sum(_kib(f"/proc/{pid}/status", "VmRSS:") for pid in pids) / 1024,
        "pss_mib": sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids) / 1024,
    }


def run_one(clients: int, rounds: int, workers: int, fraction: float) -> dict[str, Any]:
    import fedloom
    from fedloom.client.numpy_logreg import NumpyLogisticTrainer
    from fedloom.data.synthetic import teacher_dataset
    from fedloom.sim.parallel import ParallelExecutor
    from fedloom.sim.partition import partition

    x, y, x_test, y_test = teacher_dataset(200_000)
    parts = partition("iid", y, clients, seed=0)
    before = tree_memory()

    def client_fn(index: int) -> NumpyLogisticTrainer:
        return NumpyLogisticTrainer(x[parts[index]], y[parts[index]], 10)

    evaluator = NumpyLogisticTrainer(x_test, y_test, 10)
    per_round: list[dict[str, float]] = []

    def evaluate(weights: fedloom.Weights) -> dict[str, float]:
        accuracy = evaluator.evaluate(weights, fedloom.EvalConfig())["accuracy"]
        per_round.append({**tree_memory(), "accuracy": accuracy})
        return {"accuracy": accuracy}

    started = time.perf_counter()
    result = fedloom.simulate(
        client_fn,
        clients,
        fedloom.fedavg(fraction=fraction, epochs=1, batch_size=10, lr=0.1),
        rounds,
        initial_weights=evaluator.get_weights(),
        environment=fedloom.Environment(client_sizes=[len(p) for p in parts]),
        evaluation=fedloom.Evaluation(evaluate),
        executor=ParallelExecutor(workers or None),
        recording=fedloom.Recording(store=None),
        observers=[],
    )
    return {
        "clients": clients,
        "clients_per_round": result.history[0].num_selected,
        "samples_per_client": int(np.median([len(p) for p in parts])),
        "rounds": rounds,
        "workers": per_round[0]["processes"] - 1,
        "dataset_mib": x.nbytes / MIB,
        "partition_index_mib": sum(p.nbytes for p in parts) / MIB,
        "driver_rss_before_simulate_mib": before["rss_mib"],
        "simulate_seconds": time.perf_counter() - started,
        "final_accuracy": result.final_metrics["accuracy"],
        "per_round": per_round,
    }


# ----------------------------------------------------------------------------- the sweep


def measure(clients: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from benchmarks.simbench.procmon import run_measured

    cmd = [sys.executable, "-m", "benchmarks.memory_clients", "--one", str(clients)]
    cmd += ["--rounds", str(args.rounds), "--workers", str(args.workers), "--fraction", str(args.fraction)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    log = folder / f"{clients}.log"
    code, wall, peak = run_measured(cmd, env, log, interval=0.1)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("RESULT ")]
    if code != 0 or not lines:
        raise SystemExit(f"{clients} clients failed (exit {code}):\n" + "\n".join(log.read_text().splitlines()[-30:]))
    one: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    first, last = one["per_round"][0], one["per_round"][-1]
    one.update(
        {
            "wall_seconds": wall,
            "peak_tree_rss_mib": peak.rss_mib,
            "peak_tree_pss_mib": peak.pss_mib,
            "max_processes": peak.processes,
            "rss_round1_mib": first["rss_mib"],
            "rss_last_round_mib": last["rss_mib"],
            "rss_growth_pct": 100 * (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"],
            "pss_round1_mib": first["pss_mib"],
            "pss_last_round_mib": last["pss_mib"],
            "pss_growth_pct": 100 * (last["pss_mib"] - first["pss_mib"]) / first["pss_mib"],
        }
    )
    return one


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'clients':>8} {'/round':>6} {'workers':>7} {'peak RSS':>9} {'peak PSS':>9} "
        f"{'RSS r1':>8} {'RSS rN':>8} {'growth':>7} {'PSS r1':>8} {'PSS rN':>8} {'growth':>7} {'wall s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['clients']:>8,} {r['clients_per_round']:>6} {r['workers']:>7} {r['peak_tree_rss_mib']:>9.0f} "
            f"{r['peak_tree_pss_mib']:>9.0f} {r['rss_round1_mib']:>8.1f} {r['rss_last_round_mib']:>8.1f} "
            f"{r['rss_growth_pct']:>6.2f}% {r['pss_round1_mib']:>8.1f} {r['pss_last_round_mib']:>8.1f} "
            f"{r['pss_growth_pct']:>6.2f}% {r['wall_seconds']:>7.1f}"
        )
    return "\n".join(lines) + "\n(memory in MiB, whole process tree: driver + workers)"


def idle_client_cost(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """KiB of peak tree memory per client added, from the smallest to the largest size."""
    if len(rows) < 2:
        return None
    small, large = min(rows, key=lambda r: r["clients"]), max(rows, key=lambda r: r["clients"])
    extra = large["clients"] - small["clients"]
    return {
        f"{kind}_kib": 1024 * (large[f"peak_tree_{kind}_mib"] - small[f"peak_tree_{kind}_mib"]) / extra
        for kind in ("rss", "pss")
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1000,10000,50000,100000", help="comma-separated client counts")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=0, help="worker processes (0 = one per core)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size and print RESULT
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.rounds, args.workers, args.fraction)), flush=True)
        return
    command = "python -m benchmarks.memory_clients " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: {command.strip()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for clients in (int(c) for c in args.clients.split(",")):
            print(f"  {clients:,} clients ...", flush=True)
            rows.append(measure(clients, args, Path(folder)))
    print(table(rows))
    cost = idle_client_cost(rows)
    if cost:
        print(f"cost per extra client: {cost['rss_kib']:.2f} KiB RSS, {cost['pss_kib']:.2f} KiB PSS (whole tree)")
    report = {
        "benchmark": "memory_clients",
        "command": command.strip(),
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
        },
        "cost_per_extra_client": cost,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
