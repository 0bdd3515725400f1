"""The validation and the small shared steps of every partitioner in ``fedloom.sim.partition*``.

Each scheme lives in its own module; they all promise the same contract (seeded, pure,
one sorted int64 index array per client, every sample exactly once) and reject bad
input with the same wording, so those pieces are written once, here.
"""

from __future__ import annotations

import math

import numpy as np

from fedloom.core.errors import ConfigError


def sorted_parts(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Each client's indices as a sorted int64 array (stable output regardless of draw order)."""
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def split_by_owner(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Indices grouped by owning client, ascending within each client."""
    order = np.argsort(owner, kind="stable")
    return np.split(order, np.cumsum(np.bincount(owner, minlength=num_clients))[:-1])


def safe_dirichlet(rng: np.random.Generator, alpha: float | np.ndarray, k: int) -> np.ndarray:
    """Dir(alpha) proportions over ``k``; for tiny alpha all may underflow, then one of them takes all."""
    concentration = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (k,))
    proportions = rng.dirichlet(concentration)
    total = proportions.sum()
    if not np.isfinite(total) or total <= 0:
        proportions = np.zeros(k)
        proportions[rng.integers(k)] = 1.0
        return proportions
    return np.asarray(proportions / total, dtype=np.float64)


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as a non-empty 1-D int64 array of values >= 0."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise ConfigError(f"labels must be integers, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ConfigError(f"labels must be >= 0, got {int(y.min())}")
    return y.astype(np.int64, copy=False)


def check_count(name: str, value: int, low: int) -> None:
    """``value`` is a whole number (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def check_num_clients(num_clients: int, num_samples: int) -> None:
    """Between one client and one client per sample (no client may be empty)."""
    check_count("num_clients", num_clients, 1)
    if num_clients > num_samples:
        raise ConfigError(f"num_clients must be between 1 and the number of samples ({num_samples}), got {num_clients}")


def check_alpha(alpha: float, name: str = "alpha") -> None:
    """A Dirichlet concentration: finite and positive."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"{name} must be a finite number > 0 (e.g. 0.1 very skewed, 100 near IID), got {alpha!r}")


def check_min_size(min_size: int, num_clients: int, num_samples: int) -> None:
    """A floor on client sizes that the samples can meet."""
    check_count("min_size", min_size, 0)
    if min_size * num_clients > num_samples:
        raise ConfigError(
            f"min_size must be between 0 and num_samples // num_clients = {num_samples // num_clients} "
            f"({num_samples} samples, {num_clients} clients), got {min_size}"
        )
