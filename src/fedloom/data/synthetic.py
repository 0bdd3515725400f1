"""A synthetic classification set of any size, for scale tests and benchmarks (no files needed)."""

from __future__ import annotations

import numpy as np


def teacher_dataset(
    train: int, test: int = 10_000, features: int = 64, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, x_test, y_test)``: Gaussian features labelled by the arg-max of a fixed random
    linear model, so logistic regression can learn it and the size is only a parameter."""
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((features, classes)).astype(np.float32)
    x = rng.standard_normal((train + test, features), dtype=np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int64)
    return x[:train], y[:train], x[train:], y[train:]
