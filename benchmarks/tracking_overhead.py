"""What feeding TensorBoard, MLflow and W&B costs a simulated run: the same run with all three
sinks on and with none, side by side, interleaved (off, on, off, on, ...) and repeated.

The workload: NumPy logistic regression on sklearn digits, 20 clients (IID), every one
each round, E=1, B=32, 10 rounds, the sequential executor; both sides record the run in a
fresh store (the feed reads each round back from it), so the difference is the feed and
the sinks: MLflow on its default local SQLite store, W&B offline, TensorBoard event files,
the final model written to each. Each pair runs at ``--rounds`` and at twice as many, so
the sinks' cost splits into a fixed part (W&B's service start, MLflow's schema, the final
model) and a part per round. Reported: the median wall time per side, their ratio, both parts.

    python -m benchmarks.tracking_overhead                  # 5 pairs
    python -m benchmarks.tracking_overhead --repeats 9 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "tracking_overhead.json"
SINKS = ("tensorboard", "mlflow", "wandb")


def one_run(rounds: int, clients: int, tracked: bool) -> float:
    """Seconds of one simulated run in a fresh home (with every sink, or with none)."""
    from fedloom.sim.config import SimConfig
    from fedloom.sim.tasks import simulate_config
    from fedloom.store import SqlStore
    from fedloom.tracking import TrackingSettings

    config = SimConfig(dataset="digits", model="logreg", clients=clients, rounds=rounds, fraction=1.0)
    settings = TrackingSettings(sinks=SINKS) if tracked else None
    with tempfile.TemporaryDirectory(prefix="fedloom-bench-") as home:
        store = SqlStore.open_default(home)
        started = time.perf_counter()
        simulate_config(config, store=store, tracking=settings)
        seconds = time.perf_counter() - started
        store.close()
    return seconds


def versions() -> dict[str, str]:
    import mlflow
    import tensorboard
    import wandb

    return {"python": platform.python_version(), "mlflow": mlflow.__version__,
            "tensorboard": tensorboard.__version__, "wandb": wandb.__version__}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="pairs of runs (off, on)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.simplefilter("ignore", DeprecationWarning)
    one_run(2, args.clients, tracked=True)  # warm-up: imports, MLflow's schema, wandb-core start
    times: dict[tuple[int, bool], list[float]] = {}
    for _ in range(args.repeats):
        for rounds in (args.rounds, 2 * args.rounds):
            for tracked in (False, True):
                times.setdefault((rounds, tracked), []).append(one_run(rounds, args.clients, tracked))
    median = {key: statistics.median(values) for key, values in times.items()}
    off, on = times[(args.rounds, False)], times[(args.rounds, True)]
    median_off, median_on = median[(args.rounds, False)], median[(args.rounds, True)]
    cost_short = median_on - median_off
    cost_long = median[(2 * args.rounds, True)] - median[(2 * args.rounds, False)]
    per_round = (cost_long - cost_short) / args.rounds
    result = {
        "command": "python -m benchmarks.tracking_overhead " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "workload": f"digits logreg, {args.clients} clients all each round, {args.rounds} rounds, sequential",
        "sinks": list(SINKS),
        "seconds_off": off,
        "seconds_on": on,
        "median_seconds_off": median_off,
        "median_seconds_on": median_on,
        "seconds_off_double_rounds": times[(2 * args.rounds, False)],
        "seconds_on_double_rounds": times[(2 * args.rounds, True)],
        "ratio_on_over_off": median_on / median_off,
        "ratio_on_over_off_double_rounds": median[(2 * args.rounds, True)] / median[(2 * args.rounds, False)],
        "sink_ms_per_round": 1000 * per_round,
        "sink_fixed_seconds": cost_short - per_round * args.rounds,
        "platform": platform.platform(),
        "versions": versions(),
    }
    print(result["command"])
    ratio, fixed, each = result["ratio_on_over_off"], result["sink_fixed_seconds"], result["sink_ms_per_round"]
    print(f"{args.rounds} rounds: off {median_off:.2f} s, on {median_on:.2f} s, ratio {ratio:.2f}x")
    print(f"{', '.join(SINKS)}: {fixed:.2f} s per run + {each:.1f} ms per round")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
