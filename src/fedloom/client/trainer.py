"""The Trainer protocol: the one thing a user writes.

A Trainer owns a model and a site's (or a simulated client's) data. fedloom calls it
with global weights and a :class:`FitConfig`; it trains locally and returns a
:class:`FitResult`. Nothing in the protocol knows whether it runs in a simulation or in
a deployed agent, which is why the same class works unchanged in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fedloom.core.errors import ConfigError
from fedloom.core.weights import Weights


@dataclass(frozen=True)
class FitConfig:
    """Per-round instructions for local training, sent by the server to each client.

    ``seed`` makes local shuffling reproducible (it is derived from the run seed, the
    round and the client). ``extra`` carries strategy-specific values (e.g. FedProx mu).
    """

    round: int = 0
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs} (set --epochs to a positive integer)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size} (set --batch-size to a positive integer)")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr} (set --lr to a positive number)")


@dataclass(frozen=True)
class EvalConfig:
    """Instructions for evaluation; ``batch_size`` only bounds memory, not the result."""

    round: int = 0
    batch_size: int = 1024


@dataclass(frozen=True)
class FitResult:
    """What :meth:`Trainer.fit` returns: the local model, its sample count and metrics."""

    weights: Weights
    num_samples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Trainer(Protocol):
    """What a user implements once, for simulation and deployment alike."""

    def get_weights(self) -> Weights:
        """The model's current weights (used for the initial global model)."""
        ...

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        """Load ``weights``, train locally as ``config`` says, return the new weights."""
        ...

    def evaluate(self, weights: Weights, config: EvalConfig) -> Mapping[str, float]:
        """Load ``weights`` and return metrics on local data (at least ``loss``; ``accuracy`` if classifying)."""
        ...
