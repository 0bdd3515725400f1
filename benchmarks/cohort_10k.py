"""The 10,000-client logistic-regression simulation, 1,000 clients per round: cohort training vs one by one.

Fashion-MNIST split IID among 10,000 clients (6 images each), logistic regression in
PyTorch (``logreg-torch``), 1,000 clients per round, E=1, B=32, SGD lr 0.05, the
sequential executor, no store, central evaluation every round. Each setting runs in a
fresh process twice, for 1 round and for 1 + ROUNDS rounds, so the time per round is
the difference divided by ROUNDS (start-up, data loading and partitioning excluded).
Memory is the process's peak RSS (``ru_maxrss``). Torch runs with one thread by default
(``--threads``): on a shared 2-core machine two threads oversubscribe it badly.

    python -m benchmarks.cohort_10k                   # -> benchmarks/results/cohort_10k.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS, PER_ROUND = 10_000, 1_000


def one_run(cohort: str, rounds: int, data_dir: str | None, threads: int) -> None:
    import torch

    from fedloom.sim.config import SimConfig
    from fedloom.sim.tasks import simulate_config

    config = SimConfig(
        dataset="fmnist", data_dir=data_dir, model="logreg-torch", clients=CLIENTS, fraction=PER_ROUND / CLIENTS,
        rounds=rounds, epochs=1, batch_size=32, lr=0.05, seed=0, cohort=cohort,
    )  # fmt: skip
    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = simulate_config(config)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accuracy = result.history[-1].metrics["accuracy"]
    print("RESULT " + json.dumps({"wall_seconds": wall, "peak_rss_mib": peak_mib, "accuracy": accuracy}))


def measure(cohort: str, rounds: int, data_dir: str | None, threads: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.cohort_10k", "--one", cohort, "--rounds", str(rounds)]
    cmd += ["--threads", str(threads)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    return dict(json.loads(line[7:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--settings", default="auto,off")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: do not oversubscribe a busy machine)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cohort_10k.json"))
    args = p.parse_args()
    if args.one:
        one_run(args.one, args.rounds, args.data_dir, args.threads)
        return
    report: dict[str, object] = {
        "benchmark": "cohort_10k",
        "command": "python -m benchmarks.cohort_10k " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": {"python": platform.python_version()},
        "clients": CLIENTS,
        "per_round": PER_ROUND,
        "results": {},
    }
    for cohort in args.settings.split(","):
        first = measure(cohort, 1, args.data_dir, args.threads)
        more = measure(cohort, 1 + args.rounds, args.data_dir, args.threads)
        per_round = (more["wall_seconds"] - first["wall_seconds"]) / args.rounds
        entry = {
            "seconds_per_round": per_round,
            "peak_rss_mib": more["peak_rss_mib"],
            "final_accuracy": more["accuracy"],
            "wall_1_round": first["wall_seconds"],
            f"wall_{1 + args.rounds}_rounds": more["wall_seconds"],
        }
        report["results"][cohort] = entry  # type: ignore[index]
        print(cohort, json.dumps(entry), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
