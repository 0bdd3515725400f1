"""Two NumPy clients for the client-evaluation tests: one whose local data holds a single class."""

from __future__ import annotations

import numpy as np

from fedloom.client import NumpyLogisticTrainer


def one_class_and_mixed_clients(single: bool = True) -> tuple[list[NumpyLogisticTrainer], dict[str, np.ndarray]]:
    """Client 0 holds 10 rows (all of class 0 when ``single``), client 1 holds 30 rows of both classes;
    and a non-zero model to evaluate (so the AUCs are not all one half)."""
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(10, 3)).astype(np.float32), rng.normal(size=(30, 3)).astype(np.float32)
    y0 = np.zeros(10, np.int64) if single else (np.arange(10) % 2).astype(np.int64)
    y1 = (x1[:, 0] > 0).astype(np.int64)
    model = {"weight": rng.normal(size=(2, 3)).astype(np.float32), "bias": np.zeros(2, np.float32)}
    return [NumpyLogisticTrainer(x0, y0, 2), NumpyLogisticTrainer(x1, y1, 2)], model
