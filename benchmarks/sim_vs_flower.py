"""fedloom vs Flower vs a bare PyTorch loop, the same FedAvg work measured back to back in one run.

Workloads (Fashion-MNIST, Dirichlet(0.5) seed 0, E=1, B=32, SGD lr 0.05, central
evaluation on the 10k test set every round):
  cnn-100      100 clients, 10 per round, 30 rounds, the reference CNN
  logreg-1000  1,000 clients, 100 per round, 10 rounds, logistic regression 784->10

Contenders, each a fresh process (start-up included), memory = peak of its whole tree:
  bare     hand-written loop, one process, one thread (the compute floor)
  fedloom  parallel executor, one worker per core, default SQLite store
  fedloom-ray  the Ray executor on a local Ray of one CPU per core, one CPU per client
  fedloom-cohort  sequential executor, each round's clients trained as one vmapped cohort
                  (--cohort auto; torch's intra-op threads use every core), default SQLite store
  fedloom-parallel-cohort  parallel executor, one worker per core, each worker's share of a
                  round trained as one vmapped cohort (one thread each), default SQLite store
  flower   flwr.simulation.run_simulation, Ray backend, one CPU per client

    python -m benchmarks.sim_vs_flower --setup-flower      # once: flwr[simulation] in .bench-venvs/flower
    python -m benchmarks.sim_vs_flower                     # both workloads, bare / fedloom / flower
    python -m benchmarks.sim_vs_flower --contenders bare,fedloom,fedloom-ray,flower \
        --out benchmarks/results/sim_vs_flower_ray.json    # with the Ray executor (needs fedloom[ray])
(run from the repository root, with fedloom installed, e.g. `.venv/bin/python -m ...`)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.simbench import plain
from benchmarks.simbench.procmon import run_measured
from fedloom import fedavg
from fedloom.data.fashion_mnist import resolve_data_dir
from fedloom.sim.partition import partition

ROOT = Path(__file__).resolve().parent.parent
FLOWER_VENV = ROOT / ".bench-venvs" / "flower"
CONTENDERS = ("bare", "fedloom", "fedloom-ray", "fedloom-cohort", "fedloom-parallel-cohort", "flower")
DEFAULT_CONTENDERS = ("bare", "fedloom", "fedloom-cohort", "flower")
#: also runnable (--contenders): the cohort path with one torch thread (2 threads oversubscribe a busy machine)
EXTRA_CONTENDERS = ("fedloom-cohort-1t",)


def setup_flower() -> None:
    """Install flwr[simulation] in its own virtualenv (never a dependency of fedloom)."""
    subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
    pip = [str(FLOWER_VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "torch==2.13.0", "flwr[simulation]"], check=True)


def write_partitions(workload: str, data_dir: str, folder: Path, rounds: int) -> Path:
    """The exact partition fedloom's built-in task makes, plus fedloom's per-round client
    selection and per-client seeds, so the bare loop trains exactly the same clients with
    the same shuffles: their accuracy difference then measures the framework, not luck.
    (Flower samples with its own generator; that cannot be aligned.)"""
    _, y, _, _ = plain.load_fmnist(data_dir)
    w = plain.WORKLOADS[workload]
    clients, per_round = int(w["clients"]), int(w["per_round"])
    parts = partition("dirichlet", y, clients, plain.SEED, alpha=plain.ALPHA)
    arrays = {f"c{i}": p for i, p in enumerate(parts)}
    strategy = fedavg(per_round / clients, per_round, plain.EPOCHS, plain.BATCH, float(w["lr"]))
    ids = [str(i) for i in range(clients)]
    for r in range(1, rounds + 1):
        chosen = strategy.sampler.sample(ids, r, plain.SEED)
        arrays[f"sel{r}"] = np.array([int(c) for c in chosen], np.int64)
        arrays[f"seed{r}"] = np.array([strategy.client.fit_config(r, c, plain.SEED).seed for c in chosen], np.int64)
    path = folder / f"{workload}.npz"
    np.savez(path, **arrays)
    return path


def command(contender: str, workload: str, data_dir: str, parts: Path, rounds: int | None) -> list[str]:
    extra = ["--rounds", str(rounds)] if rounds else []
    common = ["--workload", workload, "--data-dir", data_dir, *extra]
    if contender == "bare":
        return [sys.executable, "-m", "benchmarks.simbench.run_bare", *common, "--partitions", str(parts)]
    if contender == "fedloom":
        return [sys.executable, "-m", "benchmarks.simbench.run_fedloom", *common]
    if contender == "fedloom-ray":
        return [sys.executable, "-m", "benchmarks.simbench.run_fedloom", *common, "--executor", "ray"]
    if contender == "fedloom-cohort":
        return [sys.executable, "-m", "benchmarks.simbench.run_fedloom", *common, "--cohort", "auto"]
    if contender == "fedloom-parallel-cohort":
        return [
            sys.executable,
            "-m",
            "benchmarks.simbench.run_fedloom",
            *common,
            "--executor",
            "parallel",
            "--cohort",
            "auto",
        ]
    if contender == "fedloom-cohort-1t":
        return [sys.executable, "-m", "benchmarks.simbench.run_fedloom", *common, "--cohort", "auto", "--threads", "1"]
    python = str(FLOWER_VENV / "bin" / "python")
    return [python, "-m", "benchmarks.simbench.run_flower", *common, "--partitions", str(parts)]


def run_contender(name: str, cmd: list[str], log: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}", "FLWR_TELEMETRY_ENABLED": "0"}
    print(f"  {name}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    code, wall, peak = run_measured(cmd, env, log)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("RESULT ")]
    if code != 0 or not lines:
        raise SystemExit(f"{name} failed (exit {code}); see {log}:\n" + "\n".join(log.read_text().splitlines()[-30:]))
    accuracy = json.loads(lines[-1][7:])["accuracy"]
    print(f"    {wall:.1f} s, peak RSS {peak.rss_mib:.0f} MiB, PSS {peak.pss_mib:.0f} MiB, acc {accuracy[-1]:.4f}")
    return {
        "wall_seconds": wall,
        "peak_rss_mib": peak.rss_mib,
        "peak_pss_mib": peak.pss_mib,
        "max_processes": peak.processes,
        "final_accuracy": accuracy[-1],
        "accuracy_by_round": accuracy,
    }


def ratios(res: dict[str, dict[str, object]], cores: int, updates: int) -> dict[str, float]:
    def num(contender: str, key: str) -> float:
        return float(res[contender][key])  # type: ignore[arg-type]

    out: dict[str, float] = {}
    floor = num("bare", "wall_seconds") / cores
    out["parallel_floor_seconds"] = floor
    for name in ("fedloom", "fedloom-ray", "fedloom-cohort", "fedloom-cohort-1t", "fedloom-parallel-cohort"):
        if name not in res:
            continue
        key = name.replace("-", "_")
        out[f"{key}_over_floor"] = num(name, "wall_seconds") / floor
        overhead = (num(name, "wall_seconds") * cores - num("bare", "wall_seconds")) / updates
        out[f"{key}_overhead_ms_per_update"] = 1000 * overhead
        out[f"{key}_minus_bare_accuracy_points"] = 100 * (num(name, "final_accuracy") - num("bare", "final_accuracy"))
        if "flower" in res:
            out[f"{key}_over_flower_time"] = num(name, "wall_seconds") / num("flower", "wall_seconds")
            out[f"flower_over_{key}_time"] = num("flower", "wall_seconds") / num(name, "wall_seconds")
            out[f"{key}_over_flower_rss"] = num(name, "peak_rss_mib") / num("flower", "peak_rss_mib")
            out[f"{key}_over_flower_pss"] = num(name, "peak_pss_mib") / num("flower", "peak_pss_mib")
    if "fedloom-ray" in res:
        out["fedloom_ray_over_parallel_time"] = num("fedloom-ray", "wall_seconds") / num("fedloom", "wall_seconds")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup-flower", action="store_true", help="create the Flower virtualenv and exit")
    p.add_argument("--workloads", default=",".join(plain.WORKLOADS))
    p.add_argument(
        "--contenders", default=",".join(DEFAULT_CONTENDERS), help=f"any of {', '.join(CONTENDERS + EXTRA_CONTENDERS)}"
    )
    p.add_argument("--rounds", type=int, help="override the rounds (quick checks only)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sim_vs_flower.json"))
    args = p.parse_args()
    if args.setup_flower:
        setup_flower()
        return
    contenders = args.contenders.split(",")
    if "flower" in contenders and not (FLOWER_VENV / "bin" / "python").exists():
        raise SystemExit("Flower is not installed: run `python -m benchmarks.sim_vs_flower --setup-flower` first")
    cmdline = "python -m benchmarks.sim_vs_flower " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: {cmdline}")
    data_dir = str(resolve_data_dir(args.data_dir))
    cores = len(os.sched_getaffinity(0))
    report: dict[str, object] = {
        "benchmark": "sim_vs_flower",
        "command": cmdline,
        "machine": {"cores": cores, "python": platform.python_version(), "cpu": platform.processor()},
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads.split(","):
            print(f"\n== {workload} ==", flush=True)
            w = plain.WORKLOADS[workload]
            parts = write_partitions(workload, data_dir, Path(tmp), args.rounds or int(w["rounds"]))
            res = {
                c: run_contender(
                    c, command(c, workload, data_dir, parts, args.rounds), Path(tmp) / f"{workload}-{c}.log"
                )
                for c in contenders
            }
            updates = int(w["per_round"]) * (args.rounds or int(w["rounds"]))
            entry = {"spec": w, "results": res, "ratios": ratios(res, cores, updates) if "bare" in res else {}}
            report["workloads"][workload] = entry  # type: ignore[index]
            print(json.dumps(entry["ratios"], indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
