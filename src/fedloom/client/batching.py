"""Shared mini-batch helpers for the built-in trainers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def epoch_batches(num_samples: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index arrays of one shuffled pass over ``num_samples`` examples (last batch may be short)."""
    order = rng.permutation(num_samples)
    for start in range(0, num_samples, batch_size):
        yield order[start : start + batch_size]


def check_arrays(x: np.ndarray, y: np.ndarray, role: str) -> None:
    """Fail early, naming the role (train/eval), when features and labels do not line up."""
    from fedloom.core.errors import ConfigError

    if len(x) != len(y):
        raise ConfigError(f"{role} data has {len(x)} examples but {len(y)} labels")
    if len(x) == 0:
        raise ConfigError(f"{role} data is empty: a client needs at least one example")
