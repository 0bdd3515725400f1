"""The Trainer protocol: the one thing a user writes.

A Trainer owns a model and a site's (or a simulated client's) data. fedloom calls it
with global weights and a :class:`FitConfig`; it trains locally and returns a
:class:`FitResult`. Nothing in the protocol knows whether it runs in a simulation or in
a deployed agent, which is why the same class works unchanged in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.weights import Weights

__all__ = ["EvalConfig", "FitConfig", "FitResult", "Trainer"]


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
