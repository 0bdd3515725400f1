"""Compressed updates on Fashion-MNIST: accuracy and upload bytes per round against uncompressed.

Sized for two shared CPU cores, and said so: the numpy logistic-regression model
(7,850 float32 parameters), the full training set IID over 20 clients, every client in
every round, E=1, B=64, client lr 0.1, 10 rounds, seed 0, accuracy on the full test
set. Each compressed row runs the same seeded federation with one scheme (error feedback
on, residuals in the run's client state directory). Bytes are each upload's safetensors
payload as it would go on the wire (header included): the mean per client and the
round's total (mean × updates); the uncompressed row's payload is the model serialised
with the same header fields. A logistic regression is a small model, so the header is a
visible share; the ratio improves with model size.

    python -m benchmarks.compression_fmnist            # writes benchmarks/results/compression_fmnist.json
    python -m benchmarks.compression_fmnist --rounds 2 --out /tmp/c.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from fedloom.core.serialization import to_bytes
from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config

ROOT = Path(__file__).resolve().parent.parent
#: (row name, compression, topk fraction)
ROWS = [("none", "none", 0.01), ("float16", "float16", 0.01), ("int8", "int8", 0.01)]
ROWS += [("topk-10%", "topk", 0.1), ("topk-1%", "topk", 0.01)]


def run_row(base: SimConfig, scheme: str, fraction: float) -> dict[str, object]:
    """One seeded run under one scheme: accuracy and bytes per round."""
    config = SimConfig(**{**base.to_dict(), "compression": scheme, "compression_topk": fraction})
    started = time.perf_counter()
    result = simulate_config(config)
    plain = len(to_bytes(result.final_weights, round=1, client_id="0", num_samples=3000, extra={"metrics": "{}"}))
    rounds = []
    for summary in result.history:
        per_client = summary.metrics.get("upload_wire_bytes", float(plain))
        rounds.append(
            {
                "round": summary.round,
                "accuracy": round(summary.metrics["accuracy"], 4),
                "upload_bytes_per_client": round(per_client, 1),
                "upload_bytes_round": round(per_client * summary.num_updates),
            }
        )
    return {
        "scheme": scheme,
        "topk_fraction": fraction,
        "seconds": round(time.perf_counter() - started, 1),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compression_fmnist.json"))
    args = parser.parse_args(argv)
    base = SimConfig(
        dataset="fmnist", data_dir=args.data_dir, clients=20, rounds=args.rounds, lr=0.1, batch_size=64, seed=0
    )
    rows = {}
    for name, scheme, fraction in ROWS:
        rows[name] = run_row(base, scheme, fraction)
        last = rows[name]["rounds"][-1]  # type: ignore[index]
        print(f"{name:10s} accuracy {last['accuracy']:.4f}  bytes/client {last['upload_bytes_per_client']:>9.1f}")
    report = {
        "command": "python -m benchmarks.compression_fmnist " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "setup": "fmnist, numpy logreg, 20 IID clients, all per round, E=1, B=64, lr=0.1, seed 0",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
