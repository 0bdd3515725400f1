"""The algorithm library on Fashion-MNIST: heterogeneity, robustness, async vs sync.

100 clients, C=0.1 (10 per round), E=1, B=32, 50 rounds, client lr 0.05, seed 0.

- heterogeneity: FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedNova, SCAFFOLD, FedCurv
  at Dirichlet(0.1) and Dirichlet(0.5): final and best accuracy.
- robustness: FedAvg and the robust aggregators under each attack with 20% malicious
  clients (IID data). Bulyan needs n >= 4f+3, so with 10 clients per round it runs with
  f=1 (Krum and Multi-Krum use f=2).
- async: FedBuff and FedAsync against synchronous FedAvg under heavy-tailed (Pareto)
  client speeds, the same number of client updates each; accuracy against simulated time.

    python -m benchmarks.algorithms_fmnist                       # CNN (a GPU helps: --device cuda)
    python -m benchmarks.algorithms_fmnist --model logreg        # CPU-sized run
    python -m benchmarks.algorithms_fmnist --tables robustness --rounds 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from fedloom.core.errors import FedloomError
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config

ROOT = Path(__file__).resolve().parent.parent
HETEROGENEITY = {
    "fedavg": {},
    "fedavgm": {"server_lr": 1.0, "server_momentum": 0.9},
    "fedprox": {"proximal_mu": 0.01},
    "fedadam": {"server_lr": 0.01},
    "fedyogi": {"server_lr": 0.01},
    "fednova": {},
    "scaffold": {},
    "fedcurv": {"curvature_lambda": 1.0},
}
NOT_YET: tuple[str, ...] = ()
ROBUST = {
    "fedavg": {},
    "median": {},
    "trimmed_mean": {"trim_beta": 0.2},
    "geometric_median": {},
    "krum": {"byzantine_f": 2},
    "multikrum": {"byzantine_f": 2, "multikrum_m": 5},
    "bulyan": {"byzantine_f": 1},
    "norm_bounded": {"clip_norm": 2.0},
    "centered_clip": {"clip_norm": 2.0},
}
ATTACKS = ("none", "label_flip", "sign_flip", "gaussian", "boost", "alie")


def base_config(args: argparse.Namespace, **changes: Any) -> SimConfig:
    values: dict[str, Any] = {
        "dataset": "fmnist", "data_dir": args.data_dir, "model": args.model, "clients": 100, "fraction": 0.1,
        "rounds": args.rounds, "epochs": 1, "batch_size": 32, "lr": 0.05, "seed": 0, "device": args.device,
        "executor": args.executor,
    }  # fmt: skip
    values.update(changes)
    return SimConfig(**values)


def run_sync(config: SimConfig) -> list[float]:
    result = simulate_config(config)
    return [h.metrics["accuracy"] for h in result.history]


def summary(accuracy: list[float], seconds: float) -> dict[str, Any]:
    return {"final": accuracy[-1], "best": max(accuracy), "curve": accuracy, "seconds": round(seconds, 1)}


def timed(label: str, fn: Any) -> Any:
    """Run one simulation; a run that diverges (a client's loss or weights turn non-finite,
    which the engine refuses) is recorded as diverged, with the error, instead of ending the benchmark."""
    started = time.perf_counter()
    try:
        out = fn()
    except FedloomError as exc:
        seconds = time.perf_counter() - started
        print(f"  {label:<40} DIVERGED: {exc}".splitlines()[0] + f"  ({seconds:.0f} s)", flush=True)
        return {"diverged": True, "error": str(exc).splitlines()[0], "seconds": round(seconds, 1)}
    seconds = time.perf_counter() - started
    print(f"  {label:<40} final {out[-1]:.4f}  best {max(out):.4f}  ({seconds:.0f} s)", flush=True)
    return summary(out, seconds)


def cell(result: dict[str, Any], key: str) -> str:
    return "diverged" if result.get("diverged") else f"{result[key]:.1%}"


def heterogeneity(args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for alpha in (0.1, 0.5):
        print(f"\n== heterogeneity, Dirichlet({alpha}) ==", flush=True)
        table[str(alpha)] = {
            name: timed(
                name,
                lambda n=name, p=params, a=alpha: run_sync(
                    base_config(args, partition="dirichlet", alpha=a, strategy=n, strategy_params=p)
                ),
            )
            for name, params in HETEROGENEITY.items()
            if not args.strategies or name in args.strategies
        }
    return table


def robustness(args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for attack in ATTACKS:
        print(f"\n== robustness, attack {attack} (20% malicious) ==", flush=True)
        table[attack] = {
            name: timed(
                name,
                lambda n=name, p=params, a=attack: run_sync(
                    base_config(args, partition="iid", strategy=n, strategy_params=p, attack=a, attack_fraction=0.2)
                ),
            )
            for name, params in ROBUST.items()
            if not args.strategies or name in args.strategies
        }
    return table


def async_vs_sync(args: argparse.Namespace) -> dict[str, Any]:
    """Same client updates for each; sync rounds last as long as their slowest client (the driver's clock)."""
    print("\n== async vs sync, Pareto(1.5) client speeds ==", flush=True)
    config = base_config(args, partition="dirichlet", alpha=0.5, speeds="pareto", speed_spread=1.5)
    speeds = config.client_speeds()
    assert speeds is not None
    out: dict[str, Any] = {"speeds": vars(speeds)}
    history = simulate_config(config).history
    out["sync_fedavg"] = [{"sim_seconds": h.metrics["sim_seconds"], "accuracy": h.metrics["accuracy"]} for h in history]
    last = out["sync_fedavg"][-1]
    print(f"  sync fedavg: {last['accuracy']:.4f} at {last['sim_seconds']:.0f} simulated s", flush=True)
    for mode in ("fedbuff", "fedasync"):
        # the deployed asynchronous lifecycle, 10 clients in flight, rounds x 10 arrivals in all:
        # FedBuff makes a version per 10 arrivals, FedAsync one per arrival
        versions = config.rounds if mode == "fedbuff" else config.rounds * 10
        run = dataclasses.replace(config, mode=mode, concurrency=10, buffer_size=10, rounds=versions)
        points = simulate_config(run).history
        out[mode] = [{"sim_seconds": p.metrics["sim_seconds"], "accuracy": p.metrics["accuracy"]} for p in points]
        last = out[mode][-1]
        print(f"  {mode}: {last['accuracy']:.4f} at {last['sim_seconds']:.0f} simulated s", flush=True)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = []
    if "heterogeneity" in report:
        lines += [
            "| Strategy | Dir(0.1) final | Dir(0.1) best | Dir(0.5) final | Dir(0.5) best |",
            "|---|---|---|---|---|",
        ]
        het = report["heterogeneity"]
        for name in [*HETEROGENEITY, *NOT_YET]:
            if name in het["0.1"] and name in het["0.5"]:
                a, b = het["0.1"][name], het["0.5"][name]
                cells = [cell(a, "final"), cell(a, "best"), cell(b, "final"), cell(b, "best")]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            else:
                lines.append(f"| {name} | not in this run | | | |")
        lines.append("")
    if "robustness" in report:
        rob = report["robustness"]
        lines += ["| Aggregator | " + " | ".join(rob) + " |", "|---" * (len(rob) + 1) + "|"]
        for name in (n for n in ROBUST if all(n in rob[a] for a in rob)):
            lines.append(f"| {name} | " + " | ".join(cell(rob[a][name], "final") for a in rob) + " |")
        lines.append("")
    if "async" in report:
        lines += ["| Mode | final accuracy | simulated seconds |", "|---|---|---|"]
        for mode in ("sync_fedavg", "fedbuff", "fedasync"):
            last = report["async"][mode][-1]
            lines.append(f"| {mode} | {last['accuracy']:.1%} | {last['sim_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn", choices=("cnn", "mlp", "logreg"))
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--tables", default="heterogeneity,robustness,async")
    p.add_argument("--device", default="cpu")
    p.add_argument("--executor", default="sequential", choices=("sequential", "parallel"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--strategies", default="", help="comma list: run only these rows (e.g. scaffold,fedcurv)")
    args = p.parse_args()
    args.strategies = [s for s in args.strategies.split(",") if s]
    command = "python -m benchmarks.algorithms_fmnist " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: {command}", flush=True)
    report: dict[str, Any] = {"benchmark": "algorithms_fmnist", "command": command, "model": args.model}
    builders = {"heterogeneity": heterogeneity, "robustness": robustness, "async": async_vs_sync}
    for table in args.tables.split(","):
        report[table] = builders[table](args)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"algorithms_fmnist_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + markdown(report) + f"\n\nwrote {out}")


if __name__ == "__main__":
    main()
