"""Split a dataset's sample indices among simulated clients: IID and the usual non-IID schemes.

Real federations are non-IID: clients see different label mixes (label skew) and hold
very different amounts of data (quantity skew). These partitioners reproduce the
schemes of the FL literature so that simulated results mean something. Every function
is seeded and pure, and returns one sorted int64 index array per client; together the
arrays cover every sample exactly once, so no data is silently lost or duplicated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.sim import partition_size
from fedloom.sim.partition_checks import (
    check_alpha,
    check_count,
    check_labels,
    check_min_size,
    check_num_clients,
    safe_dirichlet,
    sorted_parts,
    split_by_owner,
)
from fedloom.sim.partition_features import feature_clusters
from fedloom.sim.partition_inner import equal_sizes, inner_dirichlet
from fedloom.sim.partition_natural import natural

#: names accepted by :func:`partition` (and by the CLI's ``--partition``).
PARTITION_SCHEMES = (
    "iid",
    "dirichlet",
    "shards",
    "quantity",
    "natural",
    "inner_dirichlet",
    "size_skew",
    "feature_skew",
)
#: the keywords of :func:`partition` beyond ``alpha`` / ``classes_per_client`` / ``min_size``, per scheme.
SCHEME_KEYWORDS: dict[str, tuple[str, ...]] = {
    **{scheme: () for scheme in ("iid", "dirichlet", "shards", "quantity")},
    "natural": ("groups",),
    "inner_dirichlet": ("client_sizes",),
    "size_skew": ("size_skew", "size_skew_rate"),
    "feature_skew": ("features", "feature_clusters"),
}
#: how many full redraws :func:`dirichlet` makes before giving up on ``min_size``.
DIRICHLET_MAX_TRIES = 100


def iid(num_samples: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then cut into ``num_clients`` parts whose sizes differ by at most one.

    The baseline every non-IID result is compared against.
    """
    check_count("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
    order = np.random.default_rng(seed).permutation(num_samples)
    return sorted_parts(np.array_split(order, num_clients))


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    *,
    balance: bool = True,
) -> list[np.ndarray]:
    """Label skew: each class is split among clients in proportions drawn from Dir(alpha).

    The scheme of Yurochkin et al. (2019) / Hsu et al. (2019) as implemented in FedMA and
    NIID-Bench: small ``alpha`` (0.1) gives each client few classes, large ``alpha`` (100)
    approaches IID. With ``balance`` (the NIID-Bench default) a client already holding
    ``num_samples / num_clients`` samples gets no share of later classes, which keeps
    client sizes from exploding. The whole draw is repeated until every client holds at
    least ``min_size`` samples, up to :data:`DIRICHLET_MAX_TRIES` times.
    """
    y = check_labels(labels)
    check_num_clients(num_clients, y.size)
    check_alpha(alpha)
    check_min_size(min_size, num_clients, y.size)
    rng = np.random.default_rng(seed)
    for _ in range(DIRICHLET_MAX_TRIES):
        owner = _dirichlet_draw(y, num_clients, alpha, rng, balance)
        if int(np.bincount(owner, minlength=num_clients).min()) >= min_size:
            return sorted_parts(split_by_owner(owner, num_clients))
    raise ConfigError(
        f"dirichlet partition: no draw in {DIRICHLET_MAX_TRIES} tries gave every one of {num_clients} clients "
        f"at least min_size={min_size} samples (alpha={alpha}, {y.size} samples); "
        "raise alpha, use fewer clients, or lower min_size"
    )


def shards(labels: np.ndarray, num_clients: int, classes_per_client: int, seed: int) -> list[np.ndarray]:
    """McMahan et al. (2017) pathological non-IID: each client gets ``classes_per_client`` label-sorted shards.

    The samples are sorted by label and cut into ``num_clients * classes_per_client``
    shards, which are dealt out at random. Shards are cut within a class (a class gets a
    number of shards proportional to its size, at least one), so no shard straddles two
    labels and every client really holds at most ``classes_per_client`` classes; with
    equal class sizes that divide evenly this is exactly McMahan's split.
    """
    y = check_labels(labels)
    check_num_clients(num_clients, y.size)
    classes, counts = np.unique(y, return_counts=True)
    num_shards = _check_classes_per_client(classes_per_client, num_clients, classes.size, y.size)
    rng = np.random.default_rng(seed)
    per_class = _shards_per_class(counts, num_shards)
    shard_list: list[np.ndarray] = []
    for cls, count in zip(classes, per_class, strict=True):
        members = rng.permutation(np.flatnonzero(y == cls))
        shard_list.extend(np.array_split(members, int(count)))
    dealt = rng.permutation(num_shards).reshape(num_clients, classes_per_client)
    return sorted_parts([np.concatenate([shard_list[s] for s in row]) for row in dealt])


def quantity_skew(num_samples: int, num_clients: int, alpha: float, seed: int, min_size: int = 1) -> list[np.ndarray]:
    """Quantity skew: IID labels, but client sizes follow Dir(alpha) proportions.

    Each client first gets ``min_size`` samples; the rest are dealt by a multinomial
    draw with Dir(alpha) probabilities, so sizes vary (strongly for small ``alpha``)
    while every client's label mix stays close to the global one.
    """
    check_count("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
    check_alpha(alpha)
    check_min_size(min_size, num_clients, num_samples)
    rng = np.random.default_rng(seed)
    proportions = safe_dirichlet(rng, alpha, num_clients)
    sizes = min_size + rng.multinomial(num_samples - min_size * num_clients, proportions)
    order = rng.permutation(num_samples)
    return sorted_parts(np.split(order, np.cumsum(sizes)[:-1]))


def feature_skew(
    features: np.ndarray, num_clients: int, alpha: float, seed: int, num_clusters: int = 10, min_size: int = 1
) -> list[np.ndarray]:
    """Feature-distribution skew: k-means clusters of the features, dealt among clients like :func:`dirichlet` classes.

    See :mod:`fedloom.sim.partition_features`: small ``alpha`` gives each client few
    clusters (its feature mean far from the global one), large ``alpha`` approaches IID;
    :func:`~fedloom.sim.partition_features.feature_mean_spread` measures it.
    """
    clusters = feature_clusters(features, num_clusters, seed)
    try:
        return dirichlet(clusters, num_clients, alpha, seed, min_size)
    except ConfigError as exc:
        found = np.unique(clusters).size
        raise ConfigError(f"feature_skew: the features fell into {found} of {num_clusters} clusters; {exc}") from None


def partition(
    scheme: str,
    labels: np.ndarray,
    num_clients: int,
    seed: int,
    *,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    min_size: int = 1,
    **extra: Any,
) -> list[np.ndarray]:
    """Partition by scheme name (one of :data:`PARTITION_SCHEMES`), so configs can choose by string.

    The newer schemes take their own keywords (``extra``): ``groups`` (natural: one group
    value per sample), ``client_sizes`` (inner_dirichlet; default equal sizes),
    ``size_skew`` and ``size_skew_rate`` (size_skew), ``features`` and
    ``feature_clusters`` (feature_skew). A keyword the scheme does not read is an error.
    """
    y = check_labels(labels)
    _check_extra(scheme, extra)
    if scheme == "iid":
        return iid(y.size, num_clients, seed)
    if scheme == "dirichlet":
        return dirichlet(y, num_clients, alpha, seed, min_size)
    if scheme == "shards":
        return shards(y, num_clients, classes_per_client, seed)
    if scheme == "quantity":
        return quantity_skew(y.size, num_clients, alpha, seed, min_size)
    if scheme == "natural":
        return natural(_per_sample("groups", extra.get("groups"), y.size, scheme), num_clients)
    if scheme == "inner_dirichlet":
        sizes = extra.get("client_sizes")
        if sizes is not None and len(sizes) != num_clients:
            raise ConfigError(f"client_sizes lists {len(sizes)} sizes for {num_clients} clients; give one per client")
        return inner_dirichlet(y, equal_sizes(y.size, num_clients) if sizes is None else sizes, alpha, seed)
    if scheme == "size_skew":
        kind, rate = extra.get("size_skew", "linear"), extra.get("size_skew_rate", 1.0)
        return partition_size.size_skew(y.size, num_clients, kind, seed, rate=rate)
    if scheme == "feature_skew":
        features = _per_sample("features", extra.get("features"), y.size, scheme)
        return feature_skew(features, num_clients, alpha, seed, extra.get("feature_clusters", 10), min_size)
    raise ConfigError(f"partition scheme {scheme!r} is unknown; valid schemes: {', '.join(PARTITION_SCHEMES)}")


def _check_extra(scheme: str, extra: dict[str, Any]) -> None:
    """Only the keywords ``scheme`` reads (a stray one is a misconfiguration, not something to ignore)."""
    allowed = SCHEME_KEYWORDS.get(scheme, ())
    stray = sorted(set(extra) - set(allowed))
    if stray and scheme in SCHEME_KEYWORDS:
        reads = ", ".join(allowed) or "none of them"
        raise ConfigError(f"partition scheme {scheme!r} does not use {', '.join(stray)} (it reads {reads}); drop it")


def _per_sample(name: str, values: np.ndarray | None, num_samples: int, scheme: str) -> np.ndarray:
    """The per-sample array a scheme needs, present and as long as the labels."""
    if values is None:
        raise ConfigError(f"partition scheme {scheme!r} needs {name} (one value per sample); pass {name}=...")
    array = np.asarray(values)
    if array.ndim == 0 or array.shape[0] != num_samples:
        raise ConfigError(
            f"{name} must have one row per sample: {num_samples} labels but {name} of shape {array.shape}"
        )
    return array


def partition_stats(partitions: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The ``(clients, classes)`` matrix of per-client label counts: how skewed a partition is."""
    y = check_labels(labels)
    check_count("num_classes", num_classes, 1)
    if y.size and int(y.max()) >= num_classes:
        raise ConfigError(f"num_classes={num_classes} but labels go up to {int(y.max())}")
    stats = np.zeros((len(partitions), num_classes), dtype=np.int64)
    for row, indices in enumerate(partitions):
        stats[row] = np.bincount(y[np.asarray(indices, dtype=np.int64)], minlength=num_classes)
    return stats


def _dirichlet_draw(
    y: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator, balance: bool
) -> np.ndarray:
    """One draw of the per-class Dirichlet split, as the owning client of each sample.

    Vectorised (no per-client Python loop), so a redraw stays cheap with 10,000 clients.
    """
    owner = np.empty(y.size, dtype=np.int64)
    sizes = np.zeros(num_clients, dtype=np.int64)
    cap = y.size / num_clients
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        proportions = safe_dirichlet(rng, alpha, num_clients)
        if balance:
            proportions = _balanced(proportions, sizes < cap)
        cuts = (np.cumsum(proportions) * members.size).astype(np.int64)[:-1]
        clients = np.searchsorted(cuts, np.arange(members.size), side="right")
        owner[members] = clients
        sizes += np.bincount(clients, minlength=num_clients)
    return owner


def _balanced(proportions: np.ndarray, open_clients: np.ndarray) -> np.ndarray:
    """Zero the share of clients that are already full, unless that would zero everything."""
    masked = proportions * open_clients
    total = masked.sum()
    return np.asarray(masked / total, dtype=np.float64) if total > 0 else proportions


def _shards_per_class(counts: np.ndarray, num_shards: int) -> np.ndarray:
    """Shards per class, proportional to class size, each class >= 1 and <= its size, summing to num_shards."""
    per_class: np.ndarray = np.clip(np.floor(num_shards * counts / counts.sum()).astype(np.int64), 1, counts)
    while per_class.sum() < num_shards:
        room = np.where(per_class < counts, counts / per_class, -1.0)
        per_class[int(np.argmax(room))] += 1
    while per_class.sum() > num_shards:
        spare = np.where(per_class > 1, counts / per_class, np.inf)
        per_class[int(np.argmin(spare))] -= 1
    return per_class


def _check_classes_per_client(classes_per_client: int, num_clients: int, num_classes: int, num_samples: int) -> int:
    """Validate and return the number of shards, ``num_clients * classes_per_client``."""
    check_count("classes_per_client", classes_per_client, 1)
    low = math.ceil(num_classes / num_clients)
    high = min(num_classes, num_samples // num_clients)
    if not low <= classes_per_client <= high:
        raise ConfigError(
            f"classes_per_client must be between {low} and {high} for {num_clients} clients, {num_classes} classes "
            f"and {num_samples} samples (every sample must be dealt, one shard per class per slot), "
            f"got {classes_per_client}"
        )
    return num_clients * classes_per_client
