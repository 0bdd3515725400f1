"""Feature-distribution skew: clients that see different *inputs*, not only different labels.

In real federations the same label looks different from client to client (one hospital's
scanner, one writer's hand, one phone's camera). The simulation builds that skew from the
data itself: the samples are grouped into ``num_clusters`` clusters of similar features
by a seeded k-means (k-means++ start, Lloyd iterations, in NumPy), and the clusters are
then dealt among clients exactly as the label-Dirichlet scheme deals classes
(``feature_skew`` in :mod:`fedloom.sim.partition`). Small ``alpha`` gives each client few
clusters, so its feature mean drifts far from the global one; large ``alpha`` approaches
IID. :func:`feature_mean_spread` measures that promise.

Features are first scaled per column by their largest magnitude (so 1e300 or 1e-300 are
as good as 1.0) and, beyond :data:`PROJECTION_DIM` columns (images), projected onto that
many seeded Gaussian directions, which keeps distances nearly intact (Johnson-Lindenstrauss)
and the cost and memory small; both passes go :data:`CHUNK_ROWS` rows at a time.
"""

from __future__ import annotations

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.sim.partition_checks import check_count

#: k-means runs on at most this many (randomly projected) columns.
PROJECTION_DIM = 64
#: Lloyd iterations at most (fewer once at most 0.1% of the samples change cluster in one).
KMEANS_ITERATIONS = 30
#: rows converted to float64 at a time (memory stays flat for any dataset size).
CHUNK_ROWS = 8192


def feature_clusters(features: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """The k-means cluster (0 .. num_clusters - 1) of every sample, as int64 labels for Dirichlet dealing."""
    x = _check_features(features)
    check_count("feature_clusters", num_clusters, 1)
    if num_clusters > x.shape[0]:
        raise ConfigError(f"feature_clusters must be at most the number of samples ({x.shape[0]}), got {num_clusters}")
    rng = np.random.default_rng([seed, 1])  # a stream apart from the one that deals the clusters
    points = _embedded(x, _column_scale(x), rng)
    centres = _plus_plus(points, num_clusters, rng)
    assign = _nearest(points, centres)
    for _ in range(KMEANS_ITERATIONS):
        centres = _centres(points, assign, centres)
        updated = _nearest(points, centres)
        moved = int(np.count_nonzero(updated != assign))
        assign = updated
        if moved <= assign.size // 1000:  # settled: at most 0.1% of the samples still change cluster
            break
    return assign


def feature_mean_spread(partitions: list[np.ndarray], features: np.ndarray) -> float:
    """The share of the feature variance that lies *between* clients, averaged over feature columns.

    Each column is standardised over all samples; the spread is the size-weighted mean of
    the squared client means (their variance around the global mean 0). 0 means every
    client has the global mean; 1 means each client's samples are identical. For an IID
    split it is about ``(clients - 1) / samples``; constant columns are left out.
    """
    x = _check_features(features)
    scale = _column_scale(x)
    mean, std = _column_moments(x, scale)
    varying = std > 0
    if not varying.any():
        return 0.0
    between = np.zeros(int(varying.sum()))
    for part in partitions:
        idx = np.asarray(part, dtype=np.int64)
        if idx.size:
            client = _rows(x, idx)[:, varying] / scale[varying]
            between += idx.size * ((client.mean(axis=0) - mean[varying]) / std[varying]) ** 2
    return float(between.mean() / x.shape[0])


def _check_features(features: np.ndarray) -> np.ndarray:
    """At least one row, real numbers, all finite (checked chunk by chunk, without a float copy of it all)."""
    x = np.asarray(features)
    if x.ndim == 0 or x.shape[0] == 0 or x.size == 0:
        raise ConfigError(f"features must be an array with one row per sample, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ConfigError(f"features must be real numbers, got dtype {x.dtype}; convert them to float")
    if x.dtype.kind == "f":
        for rows in _chunks(x):
            bad = ~np.isfinite(_rows(x, rows)).all(axis=1)
            if bad.any():
                row = int(rows.start) + int(np.flatnonzero(bad)[0])
                raise ConfigError(f"features must be finite; row {row} holds NaN or infinity (drop or impute it)")
    return x


def _rows(x: np.ndarray, idx: np.ndarray | slice) -> np.ndarray:
    """The rows ``idx`` of ``x`` as a float64 ``(rows, columns)`` matrix."""
    block = np.asarray(x[idx], dtype=np.float64)
    return block.reshape(block.shape[0], -1)


def _chunks(x: np.ndarray) -> list[slice]:
    return [slice(start, start + CHUNK_ROWS) for start in range(0, x.shape[0], CHUNK_ROWS)]


def _column_scale(x: np.ndarray) -> np.ndarray:
    """Each column's largest magnitude (1 for all-zero columns): dividing by it keeps every value in [-1, 1]."""
    scale = np.zeros(_rows(x, slice(0, 1)).shape[1])
    for rows in _chunks(x):
        scale = np.maximum(scale, np.abs(_rows(x, rows)).max(axis=0))
    return np.where(scale > 0, scale, 1.0)


def _column_moments(x: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and standard deviation of every scaled column (two chunked passes)."""
    total = np.zeros(scale.size)
    for rows in _chunks(x):
        total += (_rows(x, rows) / scale).sum(axis=0)
    mean = total / x.shape[0]
    square = np.zeros(scale.size)
    for rows in _chunks(x):
        square += ((_rows(x, rows) / scale - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(square / x.shape[0])


def _embedded(x: np.ndarray, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The points k-means works on: scaled, projected when wide, then standardised per column."""
    width = scale.size
    projection = (
        rng.standard_normal((width, PROJECTION_DIM)) / np.sqrt(PROJECTION_DIM) if width > PROJECTION_DIM else None
    )
    blocks = []
    for rows in _chunks(x):
        block = _rows(x, rows) / scale
        blocks.append(block @ projection if projection is not None else block)
    points = np.concatenate(blocks)
    points -= points.mean(axis=0)
    std = points.std(axis=0)
    return np.asarray(points / np.where(std > 0, std, 1.0), dtype=np.float64)


def _plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ starting centres (Arthur & Vassilvitskii 2007).

    Each next centre is the best (lowest total squared distance) of ``2 + ln k`` candidates
    drawn with probability proportional to their squared distance to the centres so far;
    the greedy pick avoids the two-blobs-in-one-cluster starts that plain k-means++ can make.
    """
    chosen = [int(rng.integers(points.shape[0]))]
    distance = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    tries = 2 + int(np.log(k))
    for _ in range(1, k):
        total = distance.sum()
        if total > 0:
            candidates = rng.choice(points.shape[0], size=tries, p=distance / total)
        else:
            candidates = rng.integers(points.shape[0], size=1)
        options = [np.minimum(distance, ((points - points[c]) ** 2).sum(axis=1)) for c in candidates]
        best = int(np.argmin([o.sum() for o in options]))
        chosen.append(int(candidates[best]))
        distance = options[best]
    return points[chosen].copy()


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The index of each point's nearest centre (squared Euclidean distance, ties to the lower index)."""
    distance = (centres**2).sum(axis=1) - 2.0 * points @ centres.T
    return np.asarray(np.argmin(distance, axis=1), dtype=np.int64)


def _centres(points: np.ndarray, assign: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Each cluster's mean; a cluster left empty keeps its previous centre."""
    k = previous.shape[0]
    counts = np.bincount(assign, minlength=k)
    membership = np.zeros((points.shape[0], k))
    membership[np.arange(points.shape[0]), assign] = 1.0
    sums = membership.T @ points
    safe = np.maximum(counts, 1)[:, None]
    return np.where(counts[:, None] > 0, sums / safe, previous)
