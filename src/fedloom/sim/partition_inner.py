"""Inner-Dirichlet partitions: client sizes fixed in advance, each client's label mix skewed.

The label-Dirichlet scheme (``dirichlet``) splits each *class* among clients, so client
sizes come out of the draw. Many studies instead fix the sizes (equal, or a given list)
and skew only what each client holds: every client draws its own label mix
``p_i ~ Dir(alpha * C * prior)`` (``C`` classes, ``prior`` the global label frequencies;
for balanced classes this is the symmetric ``Dir(alpha, ..., alpha)`` of Acar et al.
2021 (FedDyn), FedLab's ``client_inner_dirichlet_partition`` and Flower Datasets'
``InnerDirichletPartitioner``, and for unbalanced ones the mean mix stays the global one).
Clients then fill their sizes class by class from their mixes; when a class runs out,
the clients still short draw from the classes left, renormalised, as those schemes do.

Promised: sizes exactly as asked; small ``alpha`` (0.1) gives each client few labels
(low label entropy), large ``alpha`` (100) approaches each client holding the global mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.sim.partition_checks import check_alpha, check_labels, check_num_clients, sorted_parts, split_by_owner


def inner_dirichlet(
    labels: np.ndarray, client_sizes: Sequence[int] | np.ndarray, alpha: float, seed: int
) -> list[np.ndarray]:
    """Client ``i`` gets exactly ``client_sizes[i]`` samples, its label mix drawn from Dir(alpha * C * prior)."""
    y = check_labels(labels)
    sizes = check_client_sizes(client_sizes, y.size)
    check_alpha(alpha)
    classes, owner_class = np.unique(y, return_inverse=True)
    counts = np.bincount(owner_class, minlength=classes.size)
    rng = np.random.default_rng(seed)
    mixes = _mixes(rng, alpha * counts / counts.mean(), sizes.size)
    grant = _fill(rng, mixes, sizes, counts)
    owner = np.empty(y.size, dtype=np.int64)
    for c in range(classes.size):
        members = rng.permutation(np.flatnonzero(owner_class == c))
        owner[members] = np.repeat(np.arange(sizes.size), grant[:, c])
    return sorted_parts(split_by_owner(owner, sizes.size))


def equal_sizes(num_samples: int, num_clients: int) -> np.ndarray:
    """``num_clients`` sizes differing by at most one and summing to ``num_samples`` (the default sizes)."""
    check_num_clients(num_clients, num_samples)
    sizes = np.full(num_clients, num_samples // num_clients, dtype=np.int64)
    sizes[: num_samples % num_clients] += 1
    return sizes


def check_client_sizes(client_sizes: Sequence[int] | np.ndarray, num_samples: int) -> np.ndarray:
    """Whole sizes >= 1, one per client, adding up to every sample (none may be left over or reused)."""
    sizes = np.asarray(client_sizes)
    if sizes.ndim != 1 or sizes.size == 0 or sizes.dtype.kind not in "iu":
        raise ConfigError(f"client_sizes must be a non-empty list of whole numbers, got {list(np.ravel(sizes))!r}")
    if int(sizes.min()) < 1:
        raise ConfigError(f"client_sizes must all be >= 1 (no empty client), got {int(sizes.min())}")
    if int(sizes.sum()) != num_samples:
        raise ConfigError(
            f"client_sizes add up to {int(sizes.sum())} but there are {num_samples} samples; every sample is "
            "used exactly once, so make them add up to that (or omit client_sizes for equal sizes)"
        )
    return sizes.astype(np.int64)


def parse_client_sizes(text: str) -> list[int]:
    """``"100,200,300"`` as ``[100, 200, 300]`` (``--client-sizes``)."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--client-sizes {text!r}: write whole numbers separated by commas, e.g. 600,400,347"
        ) from None


def _mixes(rng: np.random.Generator, concentration: np.ndarray, num_clients: int) -> np.ndarray:
    """One Dir(concentration) label mix per client; a row that underflowed to zeros puts all on one class."""
    mixes = rng.dirichlet(concentration, size=num_clients)
    totals = mixes.sum(axis=1)
    bad = ~np.isfinite(totals) | (totals <= 0)
    mixes[bad] = 0.0
    mixes[np.flatnonzero(bad), rng.integers(concentration.size, size=int(bad.sum()))] = 1.0
    return np.asarray(mixes / mixes.sum(axis=1, keepdims=True), dtype=np.float64)


def _fill(rng: np.random.Generator, mixes: np.ndarray, sizes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The ``(clients, classes)`` counts: each client's size drawn from its mix over the classes still left.

    Each round every client still short draws what it lacks; a class asked for more than it
    has is shared out among its askers in proportion to their asks (multivariate
    hypergeometric) and is then exhausted, so there are at most ``classes + 1`` rounds.
    """
    grant = np.zeros(mixes.shape, dtype=np.int64)
    need, left = sizes.copy(), counts.astype(np.int64)
    while need.sum() > 0:
        open_mix = mixes * (left > 0)
        totals = open_mix.sum(axis=1, keepdims=True)
        fallback = left / left.sum()
        pvals = np.where(totals > 0, open_mix / np.where(totals > 0, totals, 1.0), fallback)
        want = rng.multinomial(need, pvals)
        for c in np.flatnonzero(want.sum(axis=0) > left):
            want[:, c] = rng.multivariate_hypergeometric(want[:, c], int(left[c]))
        grant += want
        need -= want.sum(axis=1)
        left -= want.sum(axis=0)
    return grant
