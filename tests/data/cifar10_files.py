"""Write small CIFAR-10 binary batches (the real record layout) for tests and examples tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedloom.data.cifar10 import SUBFOLDER, TEST_FILE, TRAIN_FILES


def batch_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Records of 1 label byte + the R, G and B planes of one image each, as the real files hold."""
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(labels), -1)], axis=1)
    return records.astype(np.uint8).tobytes()


def write_fake_cifar10(root: Path, per_batch: int = 50, seed: int = 0) -> Path:
    """Six batches of ``per_batch`` random images under ``root/cifar-10-batches-bin``; returns that folder.

    Labels cycle 0..9 and each class brightens one colour plane, so a model can learn them.
    """
    folder = root / SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in (*TRAIN_FILES, TEST_FILE):
        labels = (np.arange(per_batch) + rng.integers(0, 10)) % 10
        images = rng.integers(0, 128, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, label % 3, : 8 + 2 * label] += 120
        (folder / name).write_bytes(batch_bytes(images, labels))
    return folder
