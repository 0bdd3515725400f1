"""``fedloom partition``: show how a partition scheme splits a dataset among clients.

Before spending hours on a simulation, a user should see the skew it will face: how
big each client is and which labels it holds. This command prints exactly that, as a
table or as JSON for scripts, without training anything.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from fedloom.data import DATASETS, load_dataset
from fedloom.sim.partition import PARTITION_SCHEMES, partition, partition_stats

#: above this many clients the table shows only the first and last rows.
MAX_FULL_ROWS = 50
HEAD_ROWS = 20
TAIL_ROWS = 5


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``partition`` sub-command to the ``fedloom`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "partition",
        help="show per-client sizes and label histograms of a partition",
        description="Partition a dataset's training split among clients and print each client's size "
        "and per-class counts, followed by a summary of the skew.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="digits", help="dataset (default: digits)")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files (default: $FEDLOOM_DATA)")
    parser.add_argument("--clients", type=int, default=10, metavar="N", help="number of clients (default: 10)")
    parser.add_argument(
        "--partition", choices=PARTITION_SCHEMES, default="dirichlet", help="scheme (default: dirichlet)"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (dirichlet, quantity)")
    parser.add_argument("--classes-per-client", type=int, default=2, help="shards per client (shards)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Partition the training split as asked and print the table (or JSON)."""
    splits = load_dataset(args.dataset, args.data_dir)
    labels = splits.train.y
    parts = partition(
        args.partition,
        labels,
        args.clients,
        args.seed,
        alpha=args.alpha,
        classes_per_client=args.classes_per_client,
    )
    histogram = partition_stats(parts, labels, splits.num_classes)
    report = build_report(args, histogram)
    print(json.dumps(report) if args.json else format_report(report, histogram))
    return 0


def build_report(args: argparse.Namespace, histogram: np.ndarray) -> dict[str, Any]:
    """Everything the command shows, as JSON-ready plain Python values."""
    return {
        "dataset": args.dataset,
        "partition": args.partition,
        "clients": int(histogram.shape[0]),
        "num_classes": int(histogram.shape[1]),
        "num_samples": int(histogram.sum()),
        "seed": args.seed,
        "alpha": args.alpha if args.partition in ("dirichlet", "quantity") else None,
        "classes_per_client": args.classes_per_client if args.partition == "shards" else None,
        "sizes": [int(s) for s in histogram.sum(axis=1)],
        "histogram": histogram.tolist(),
        "summary": summarise(histogram),
    }


def summarise(histogram: np.ndarray) -> dict[str, float]:
    """Size spread and label diversity: the two numbers that say how non-IID a partition is."""
    sizes = histogram.sum(axis=1)
    return {
        "min_size": int(sizes.min()),
        "median_size": float(np.median(sizes)),
        "max_size": int(sizes.max()),
        "mean_classes": float((histogram > 0).sum(axis=1).mean()),
    }


def format_report(report: dict[str, Any], histogram: np.ndarray) -> str:
    """The human-readable table: a header line, one row per client (elided when many), a summary."""
    lines = [_title(report), *_table(histogram)]
    summary = report["summary"]
    lines.append(
        f"sizes: min {summary['min_size']}, median {summary['median_size']:g}, max {summary['max_size']}; "
        f"classes per client (>=1 sample): mean {summary['mean_classes']:.2f} of {report['num_classes']}"
    )
    return "\n".join(lines)


def _title(report: dict[str, Any]) -> str:
    if report["alpha"] is not None:
        params = f"alpha={report['alpha']:g}"
    elif report["classes_per_client"] is not None:
        params = f"classes_per_client={report['classes_per_client']}"
    else:
        params = ""
    return (
        f"{report['dataset']} train: {report['num_samples']} samples, {report['num_classes']} classes; "
        f"{report['partition']}({params}) over {report['clients']} clients, seed {report['seed']}"
    )


def _table(histogram: np.ndarray) -> list[str]:
    """Header plus client rows; beyond :data:`MAX_FULL_ROWS` clients only the first and last rows."""
    num_clients, num_classes = histogram.shape
    width = max(len(str(int(histogram.max()))), len(str(num_classes - 1)) + 1, 3)
    size_width = max(len(str(int(histogram.sum(axis=1).max()))), 4)
    id_width = max(len(str(num_clients - 1)), 6)
    header = f"{'client':>{id_width}} {'size':>{size_width}} | " + " ".join(
        f"{'c' + str(c):>{width}}" for c in range(num_classes)
    )
    rows = [header, "-" * len(header)]
    shown = _shown_rows(num_clients)
    for position, client in enumerate(shown):
        if position and client != shown[position - 1] + 1:
            rows.append(f"{'...':>{id_width}} ({client - shown[position - 1] - 1} clients not shown)")
        counts = histogram[client]
        cells = " ".join(f"{int(v):>{width}}" for v in counts)
        rows.append(f"{client:>{id_width}} {int(counts.sum()):>{size_width}} | {cells}")
    return rows


def _shown_rows(num_clients: int) -> list[int]:
    if num_clients <= MAX_FULL_ROWS:
        return list(range(num_clients))
    return [*range(HEAD_ROWS), *range(num_clients - TAIL_ROWS, num_clients)]
