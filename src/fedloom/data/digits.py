"""scikit-learn's 8x8 handwritten digits: a tiny (1,797 images) dataset for fast tests and demos.

It ships inside scikit-learn, so it needs no download and no files; scikit-learn is an
optional extra, imported only when this loader runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError, DataError
from fedloom.data.dataset import ArrayDataset, DatasetSplits

NUM_CLASSES = 10


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> DatasetSplits:
    """Load the digits as x float32 ``(n, 1, 8, 8)`` in [0, 1] and y int64, split train/test.

    The split is stratified (each class keeps the same train/test ratio) and seeded, so
    accuracies are comparable across runs and no class is missing from the test set.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    bunch = _sklearn_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    return DatasetSplits(
        name="digits",
        train=ArrayDataset(x[train_idx], y[train_idx], NUM_CLASSES),
        test=ArrayDataset(x[test_idx], y[test_idx], NUM_CLASSES),
    )


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test index arrays, taking ``round(test_fraction * n_c)`` of each class to test."""
    rng = np.random.default_rng(seed)
    test_parts: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[: round(test_fraction * members.size)])
    test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64)
    train_mask = np.ones(labels.shape[0], dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), test_idx


def _sklearn_digits() -> Any:
    """``sklearn.datasets.load_digits()``, or a DataError saying how to install scikit-learn."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DataError(
            "the digits dataset needs scikit-learn, which is not installed: run `pip install 'fedloom[datasets]'`"
        ) from exc
    return sk_load_digits()
