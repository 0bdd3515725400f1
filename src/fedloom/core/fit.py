"""Configs a server sends to clients and what a client's fit returns.

They live in core because they cross every boundary: the round engine builds them,
the wire carries them, and the user's Trainer receives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
            raise ConfigError(
                f"batch_size must be >= 1, got {self.batch_size} (set --batch-size to a positive integer)"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr} (set --lr to a positive number)")


@dataclass(frozen=True)
class EvalConfig:
    """Instructions for evaluation; ``batch_size`` only bounds memory, not the result."""

    round: int = 0
    batch_size: int = 256


@dataclass(frozen=True)
class FitResult:
    """What :meth:`Trainer.fit` returns: the local model, its sample count and metrics."""

    weights: Weights
    num_samples: int
    metrics: Mapping[str, float] = field(default_factory=dict)
