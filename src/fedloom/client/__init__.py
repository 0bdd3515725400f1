"""fedloom.client — the Trainer protocol and the built-in trainers.

``TorchTrainer`` is imported lazily so ``import fedloom.client`` works without PyTorch.
"""

from __future__ import annotations

from typing import Any

from fedloom.client.numpy_logreg import NumpyLogisticTrainer
from fedloom.client.numpy_mlp import NumpyMLPTrainer
from fedloom.client.trainer import EvalConfig, FitConfig, FitResult, Trainer

__all__ = [
    "EvalConfig",
    "FitConfig",
    "FitResult",
    "NumpyLogisticTrainer",
    "NumpyMLPTrainer",
    "Trainer",
    "TorchTrainer",
]


def __getattr__(name: str) -> Any:
    if name == "TorchTrainer":
        from fedloom.client.torch_trainer import TorchTrainer

        return TorchTrainer
    raise AttributeError(f"module 'fedloom.client' has no attribute {name!r}")
