"""Framework-free pieces shared by the bare loop and the Flower client: data, models, one client's training.

Deliberately plain PyTorch + NumPy, so the bare loop is the compute floor and Flower
runs exactly the same per-client work as fedloom.
"""

from __future__ import annotations

import gzip
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

MEAN, STD = 0.2860, 0.3530

WORKLOADS: dict[str, dict[str, object]] = {
    "cnn-100": {"model": "cnn", "clients": 100, "per_round": 10, "rounds": 30, "lr": 0.05},
    "logreg-1000": {"model": "logreg", "clients": 1000, "per_round": 100, "rounds": 10, "lr": 0.05},
}
EPOCHS, BATCH, ALPHA, SEED = 1, 32, 0.5, 0


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)
    return np.frombuffer(data, np.uint8, offset=8)


@lru_cache(maxsize=1)
def load_fmnist(data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float32 (n,1,28,28) standardised, int64 labels."""
    d = Path(data_dir)

    def images(name: str) -> np.ndarray:
        return ((_idx(d / name).astype(np.float32) / 255.0 - MEAN) / STD)[:, None]

    def labels(name: str) -> np.ndarray:
        return _idx(d / name).astype(np.int64)

    return (
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
    )


def build_model(name: str) -> nn.Module:
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [t.detach().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    with torch.no_grad():
        for t, w in zip(model.state_dict().values(), weights, strict=True):
            t.copy_(torch.from_numpy(np.array(w, copy=True)))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, lr: float, seed: int) -> None:
    """E=1 epoch of SGD with batch 32 over one client's data."""
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(EPOCHS):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), 1024):
            xb, yb = torch.from_numpy(x[start : start + 1024]), torch.from_numpy(y[start : start + 1024])
            out = model(xb)
            loss += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    return loss / len(y), correct / len(y)


def load_partitions(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        count = sum(1 for name in f.files if name.startswith("c"))
        return [f[f"c{i}"] for i in range(count)]


def load_schedule(path: str, round_no: int) -> tuple[np.ndarray, np.ndarray]:
    """fedloom's (selected clients, per-client seeds) for a 1-based round."""
    with np.load(path, allow_pickle=False) as f:
        return f[f"sel{round_no}"], f[f"seed{round_no}"]
