"""``fedloom partition``: show how a partition scheme splits a dataset among clients.

Before spending hours on a simulation, a user should see the skew it will face: how
big each client is, which labels it holds, how far its features drift from the global
mix, and (for a natural partition) which site or user it is. This command prints exactly
that, as a table or as JSON for scripts, without training anything.
:func:`report_partition` is the same report for data the command cannot load itself
(a table with a site column): pass its ``groups``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.data import DATASETS, load_dataset
from fedloom.sim.partition import PARTITION_SCHEMES, partition
from fedloom.sim.partition_inner import parse_client_sizes
from fedloom.sim.partition_natural import natural_names
from fedloom.sim.partition_size import SIZE_SKEW_KINDS
from fedloom.sim.partition_split import train_test_split
from fedloom.sim.partition_summary import summarise_partition

#: above this many clients the table shows only the first and last rows.
MAX_FULL_ROWS = 50
HEAD_ROWS = 20
TAIL_ROWS = 5
#: clients when ``--clients`` is not given (a natural partition has one per group instead).
DEFAULT_CLIENTS = 10


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``partition`` sub-command to the ``fedloom`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "partition",
        help="show per-client sizes and label histograms of a partition",
        description="Partition a dataset's training split among clients and print each client's size "
        "and per-class counts, followed by a summary of the skew.",
    )
    add = parser.add_argument
    add("--dataset", choices=DATASETS, default="digits", help="dataset (default: digits)")
    add("--data-dir", default=None, help="folder holding the dataset files (default: $FEDLOOM_DATA)")
    add("--clients", type=int, default=None, metavar="N", help="clients (default 10; natural: one per group)")
    add("--partition", choices=PARTITION_SCHEMES, default="dirichlet", help="scheme (default: dirichlet)")
    add("--alpha", type=float, default=0.5, help="Dirichlet concentration (dirichlet, quantity, inner_dirichlet, "
        "feature_skew)")  # fmt: skip
    add("--classes-per-client", type=int, default=2, help="shards per client (shards)")
    add("--groups-file", metavar="FILE", help="natural: one group per training sample, a .npy array or a .csv")
    add("--by", metavar="COLUMN", help="natural: the .csv column holding each sample's site or user id")
    add("--client-sizes", metavar="N,N,...", help="inner_dirichlet: one size per client (default: equal sizes)")
    add("--size-skew", choices=SIZE_SKEW_KINDS, default="linear", help="size_skew: the size law (default linear)")
    add("--size-skew-rate", type=float, default=1.0, help="size_skew exponential: size ~ exp(rate * i) (default 1)")
    add("--feature-clusters", type=int, default=10, metavar="K", help="feature_skew: k-means clusters (default 10)")
    add("--local-test-fraction", type=float, default=0.0, help="share of each client held out as its test set")
    add("--seed", type=int, default=0, help="random seed (default: 0)")
    add("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Partition the training split as asked and print the table (or JSON)."""
    splits = load_dataset(args.dataset, args.data_dir)
    labels = splits.train.y
    options = _scheme_options(args)  # a flag of another scheme is refused before any file is read
    groups = _groups_from_args(args, labels.size)
    report = report_partition(
        args.partition,
        labels,
        splits.num_classes,
        args.clients,
        args.seed,
        features=splits.train.x,
        groups=groups,
        test_fraction=args.local_test_fraction,
        **options,
    )
    report = {"dataset": args.dataset, **report, "by": args.by or args.groups_file}
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def report_partition(
    scheme: str,
    labels: np.ndarray,
    num_classes: int,
    num_clients: int | None,
    seed: int,
    *,
    features: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    test_fraction: float = 0.0,
    **options: Any,
) -> dict[str, Any]:
    """Partition, then every statistic the scheme promises, as JSON-ready values (see summarise_partition).

    ``num_clients=None`` means one client per group for ``natural`` and
    :data:`DEFAULT_CLIENTS` otherwise; ``options`` are :func:`partition`'s keywords.
    """
    extra = _with_arrays(scheme, options, groups, features)
    count = num_clients if num_clients is not None else _default_clients(scheme, groups)
    parts = partition(scheme, labels, count, seed, **extra)
    summary = summarise_partition(
        parts,
        labels,
        num_classes,
        features=features,
        names=natural_names(groups) if scheme == "natural" and groups is not None else None,
        splits=train_test_split(parts, test_fraction, seed) if test_fraction else None,
    )
    histogram = summary.pop("histogram")
    sizes = summary.pop("sizes")
    return {
        "partition": scheme,
        "clients": len(parts),
        "num_classes": num_classes,
        "num_samples": int(sum(sizes)),
        "seed": seed,
        "alpha": options.get("alpha")
        if scheme in ("dirichlet", "quantity", "inner_dirichlet", "feature_skew")
        else None,
        "classes_per_client": options.get("classes_per_client") if scheme == "shards" else None,
        "params": _scheme_params(scheme, extra),
        "test_fraction": test_fraction,
        "sizes": sizes,
        "histogram": histogram,
        "summary": summary,
    }


def _with_arrays(
    scheme: str, options: dict[str, Any], groups: np.ndarray | None, features: np.ndarray | None
) -> dict[str, Any]:
    """``options`` plus the per-sample array the scheme splits by (natural: groups, feature_skew: features)."""
    extra = dict(options)
    if scheme == "natural":
        if groups is None:
            raise ConfigError("partition natural needs each sample's group: --groups-file F.npy, or F.csv --by COLUMN")
        extra["groups"] = groups
    if scheme == "feature_skew":
        extra["features"] = features
    return extra


#: the flags only one scheme reads: flag attribute -> (that scheme, the flag's default)
_SCHEME_FLAGS: dict[str, tuple[str, Any]] = {
    "groups_file": ("natural", None),
    "by": ("natural", None),
    "client_sizes": ("inner_dirichlet", None),
    "size_skew": ("size_skew", "linear"),
    "size_skew_rate": ("size_skew", 1.0),
    "feature_clusters": ("feature_skew", 10),
}


def _scheme_options(args: argparse.Namespace) -> dict[str, Any]:
    """The partition() keywords of ``--partition``; a flag of another scheme is refused, not ignored."""
    for name, (scheme, default) in _SCHEME_FLAGS.items():
        if getattr(args, name) != default and args.partition != scheme:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} only applies to --partition {scheme}, got --partition {args.partition}")
    options: dict[str, Any] = {"alpha": args.alpha, "classes_per_client": args.classes_per_client}
    if args.partition == "inner_dirichlet" and args.client_sizes:
        options["client_sizes"] = parse_client_sizes(args.client_sizes)
    if args.partition == "size_skew":
        options |= {"size_skew": args.size_skew, "size_skew_rate": args.size_skew_rate}
    if args.partition == "feature_skew":
        options["feature_clusters"] = args.feature_clusters
    return options


def _groups_from_args(args: argparse.Namespace, num_samples: int) -> np.ndarray | None:
    """``--groups-file`` read as one group per training sample (None without it)."""
    if args.groups_file is None:
        if args.by is not None:
            raise ConfigError(f"--by {args.by} names a column of --groups-file F.csv; add --groups-file")
        return None
    groups = load_groups(args.groups_file, args.by)
    if groups.shape != (num_samples,):
        raise ConfigError(
            f"--groups-file {args.groups_file} holds {groups.shape[0]} groups but the {args.dataset} training split "
            f"has {num_samples} samples; give one group per training sample, in order"
        )
    return groups


def load_groups(path: str | Path, column: str | None = None) -> np.ndarray:
    """A group column from a ``.npy`` array (no pickles) or from a ``.csv`` file's ``column``.

    CSV values that are all whole numbers become integers, so user 10 sorts after user 2.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--groups-file {str(file)!r} does not exist")
    if file.suffix == ".npy":
        if column is not None:
            raise ConfigError(f"--by {column}: a .npy groups file is a single column already; drop --by")
        try:
            groups = np.load(file, allow_pickle=False)
        except ValueError as exc:
            raise ConfigError(f"--groups-file {str(file)!r} is not a plain .npy array ({exc})") from None
        if groups.ndim != 1:
            raise ConfigError(f"--groups-file {str(file)!r} must hold a 1-D array, got shape {groups.shape}")
        return np.asarray(groups)
    if file.suffix == ".csv":
        return _csv_column(file, column)
    raise ConfigError(f"--groups-file {str(file)!r}: give a .npy array or a .csv file (with --by COLUMN)")


def _csv_column(file: Path, column: str | None) -> np.ndarray:
    with file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        if column is None or column not in header:
            given = f"--by {column!r} is not one of them" if column else "add --by COLUMN"
            raise ConfigError(f"--groups-file {file.name} has columns {', '.join(header)}; {given}")
        values = [row[column] or "" for row in reader]
    stripped = [v.strip() for v in values]
    if stripped and all(v.lstrip("-").isdigit() for v in stripped):
        return np.array([int(v) for v in stripped], dtype=np.int64)
    return np.array(stripped, dtype=str)


def _default_clients(scheme: str, groups: np.ndarray | None) -> int:
    return len(natural_names(groups)) if scheme == "natural" and groups is not None else DEFAULT_CLIENTS


def _scheme_params(scheme: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The parameters that shaped this scheme's split, for the title and the JSON."""
    keys = {
        "dirichlet": ("alpha",),
        "quantity": ("alpha",),
        "shards": ("classes_per_client",),
        "inner_dirichlet": ("alpha", "client_sizes"),
        "size_skew": ("size_skew", "size_skew_rate") if extra.get("size_skew") == "exponential" else ("size_skew",),
        "feature_skew": ("alpha", "feature_clusters"),
    }.get(scheme, ())
    return {key: extra[key] for key in keys if key in extra}


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table: a header line, one row per client (elided when many), the statistics."""
    summary = report["summary"]
    histogram = np.asarray(report["histogram"], dtype=np.int64)
    lines = [_title(report), *_table(histogram, summary["names"], summary["test_sizes"])]
    lines.append(
        f"sizes: min {summary['min_size']}, median {summary['median_size']:g}, max {summary['max_size']}; "
        f"classes per client (>=1 sample): mean {summary['mean_classes']:.2f} of {report['num_classes']}"
    )
    lines.append(
        f"label entropy per client: mean {summary['mean_label_entropy']:.3f} nats "
        f"(the global label mix: {summary['global_label_entropy']:.3f}; lower = stronger label skew)"
    )
    if summary["feature_mean_spread"] is not None:
        lines.append(
            f"feature-mean spread: {summary['feature_mean_spread']:.4f} (share of the feature variance between "
            "clients; IID gives about (clients - 1) / samples, higher = stronger feature skew)"
        )
    if summary["test_sizes"] is not None:
        tests = summary["test_sizes"]
        lines.append(
            f"local test sets ({report['test_fraction']:g} of each client): {sum(tests)} samples held out, "
            f"min {min(tests)}, max {max(tests)} per client"
        )
    return "\n".join(lines)


def _title(report: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={_show(v)}" for k, v in report["params"].items())
    if report["partition"] == "natural" and report.get("by"):
        params = f"by={report['by']}"
    return (
        f"{report['dataset']} train: {report['num_samples']} samples, {report['num_classes']} classes; "
        f"{report['partition']}({params}) over {report['clients']} clients, seed {report['seed']}"
    )


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _table(histogram: np.ndarray, names: list[str] | None, test_sizes: list[int] | None) -> list[str]:
    """Header plus client rows; beyond :data:`MAX_FULL_ROWS` clients only the first and last rows."""
    num_clients, num_classes = histogram.shape
    width = max(len(str(int(histogram.max()))), len(str(num_classes - 1)) + 1, 3)
    size_width = max(len(str(int(histogram.sum(axis=1).max()))), 4)
    id_width = max(len(str(num_clients - 1)), 6)
    name_width = max([len(n) for n in names or []] + [5])
    group = f" {'group':<{name_width}}" if names else ""
    test = f" {'test':>{size_width}}" if test_sizes else ""
    header = f"{'client':>{id_width}}{group} {'size':>{size_width}}{test} | " + " ".join(
        f"{'c' + str(c):>{width}}" for c in range(num_classes)
    )
    rows = [header, "-" * len(header)]
    shown = _shown_rows(num_clients)
    for position, client in enumerate(shown):
        if position and client != shown[position - 1] + 1:
            rows.append(f"{'...':>{id_width}} ({client - shown[position - 1] - 1} clients not shown)")
        counts = histogram[client]
        cells = " ".join(f"{int(v):>{width}}" for v in counts)
        name = f" {names[client]:<{name_width}}" if names else ""
        held = f" {test_sizes[client]:>{size_width}}" if test_sizes else ""
        rows.append(f"{client:>{id_width}}{name} {int(counts.sum()):>{size_width}}{held} | {cells}")
    return rows


def _shown_rows(num_clients: int) -> list[int]:
    if num_clients <= MAX_FULL_ROWS:
        return list(range(num_clients))
    return [*range(HEAD_ROWS), *range(num_clients - TAIL_ROWS, num_clients)]
