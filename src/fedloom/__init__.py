"""fedloom — federated learning that simulates fast, deploys safely, and ships the literature.

The curated public API (a test pins it): the data types of :mod:`fedloom.core`, the
Trainer protocol and built-in trainers, strategies, and :func:`simulate`.
"""

from __future__ import annotations

from typing import Any

from fedloom.algorithms import ClientSampler, RoundCriteria, Strategy, fedavg
from fedloom.client import EvalConfig, FitConfig, FitResult, NumpyLogisticTrainer, Trainer
from fedloom.core import ClientUpdate, FedloomError, Weights, from_bytes, to_bytes
from fedloom.sim.driver import simulate
from fedloom.sim.history import SimulationResult
from fedloom.sim.options import Environment, Evaluation, Recording

__version__ = "0.1.0"

__all__ = [
    "ClientSampler",
    "ClientUpdate",
    "Environment",
    "EvalConfig",
    "Evaluation",
    "FedloomError",
    "FitConfig",
    "FitResult",
    "NumpyLogisticTrainer",
    "Recording",
    "RoundCriteria",
    "SimulationResult",
    "Strategy",
    "TorchTrainer",
    "Trainer",
    "Weights",
    "__version__",
    "fedavg",
    "from_bytes",
    "simulate",
    "to_bytes",
]


def __getattr__(name: str) -> Any:
    if name == "TorchTrainer":  # lazy: importing fedloom must not require PyTorch
        from fedloom.client.torch_trainer import TorchTrainer

        return TorchTrainer
    raise AttributeError(f"module 'fedloom' has no attribute {name!r}")
