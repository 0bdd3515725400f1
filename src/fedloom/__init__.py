"""fedloom — federated learning that simulates fast, deploys safely, and ships the literature.

The curated public API (a test pins it): the data types of :mod:`fedloom.core`, the
Trainer protocol and built-in trainers, strategies, and :func:`simulate`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedloom.algorithms import ClientSampler, RoundCriteria, Strategy, fedavg
    from fedloom.client import EvalConfig, FitConfig, FitResult, NumpyLogisticTrainer, Trainer
    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.core import ClientUpdate, FedloomError, Weights, from_bytes, to_bytes
    from fedloom.sim.driver import simulate
    from fedloom.sim.history import SimulationResult
    from fedloom.sim.options import Environment, Evaluation, Recording

#: public name -> the module it lives in. Imported on first use (PEP 562), so that
#: ``import fedloom.light`` on a device needs only NumPy and the standard library, and
#: ``import fedloom`` never requires PyTorch.
_LAZY = {
    **dict.fromkeys(("ClientSampler", "RoundCriteria", "Strategy", "fedavg"), "fedloom.algorithms"),
    **dict.fromkeys(("EvalConfig", "FitConfig", "FitResult", "NumpyLogisticTrainer", "Trainer"), "fedloom.client"),
    **dict.fromkeys(("ClientUpdate", "FedloomError", "Weights", "from_bytes", "to_bytes"), "fedloom.core"),
    "TorchTrainer": "fedloom.client.torch_trainer",
    "simulate": "fedloom.sim.driver",
    "SimulationResult": "fedloom.sim.history",
    **dict.fromkeys(("Environment", "Evaluation", "Recording"), "fedloom.sim.options"),
}

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
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fedloom' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value
