"""The statistics a partition promises, in one place: what ``fedloom partition`` prints and runs record.

Each scheme promises something measurable: sizes (exact for inner-Dirichlet, a law for
size skew), label skew (lower label entropy for smaller alpha), feature skew (a larger
between-client share of the feature variance). Showing those numbers before a long
simulation lets a researcher check that the split is the one the paper used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedloom.sim.partition import partition_stats
from fedloom.sim.partition_features import feature_mean_spread


def label_entropy(histogram: np.ndarray) -> np.ndarray:
    """Each row's Shannon entropy in nats (0: one label; ln(classes): all labels equally)."""
    counts = np.asarray(histogram, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    mix = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    logs = np.log(mix, out=np.zeros_like(mix), where=mix > 0)
    return np.asarray(-(mix * logs).sum(axis=1), dtype=np.float64)


def summarise_partition(
    partitions: list[np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    *,
    features: np.ndarray | None = None,
    names: list[str] | None = None,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Sizes, label histogram and entropy per client, and (when given) feature spread, group names, test sizes.

    Plain JSON-ready values; ``names`` are the natural partition's groups (client ``k`` is
    ``names[k]``) and ``splits`` the per-client (train, test) split of ``partition_split``.
    """
    histogram = partition_stats(partitions, labels, num_classes)
    sizes = histogram.sum(axis=1)
    entropy = label_entropy(histogram)
    summary: dict[str, Any] = {
        "sizes": [int(s) for s in sizes],
        "histogram": histogram.tolist(),
        "label_entropy": [round(float(e), 6) for e in entropy],
        "min_size": int(sizes.min()),
        "median_size": float(np.median(sizes)),
        "max_size": int(sizes.max()),
        "mean_classes": float((histogram > 0).sum(axis=1).mean()),
        "mean_label_entropy": float(entropy.mean()),
        "global_label_entropy": float(label_entropy(histogram.sum(axis=0, keepdims=True))[0]),
        "feature_mean_spread": None if features is None else feature_mean_spread(partitions, features),
        "names": names,
        "test_sizes": None if splits is None else [int(test.size) for _, test in splits],
    }
    return summary
