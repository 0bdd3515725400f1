"""The Trainer protocol: the one thing a user writes.

A Trainer owns a model and a site's (or a simulated client's) data. fedloom calls it
with global weights and a :class:`FitConfig`; it trains locally and returns a
:class:`FitResult`. Nothing in the protocol knows whether it runs in a simulation or in
a deployed agent, which is why the same class works unchanged in both.

Client-side algorithms (FedProx, SCAFFOLD, FedCurv, FedDyn) reach a Trainer through one
hook: the optional third argument of ``fit``, a :class:`ClientTerms`. A trainer that
adds ``terms.gradient(name, value)`` to each parameter's gradient (and, when
``terms.report_fisher`` is set, returns the diagonal Fisher) runs every one of them
without knowing their names. A trainer whose ``fit`` takes two arguments still runs
every strategy without client-side terms (FedAvg, the robust and server-side rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.terms import NO_TERMS, AffineTerm, ClientTerms
from fedloom.core.weights import Weights

__all__ = ["NO_TERMS", "AffineTerm", "ClientTerms", "EvalConfig", "FitConfig", "FitResult", "Trainer"]


@runtime_checkable
class Trainer(Protocol):
    """What a user implements once, for simulation and deployment alike."""

    def get_weights(self) -> Weights:
        """The model's current weights (used for the initial global model)."""
        ...

    def fit(self, weights: Weights, config: FitConfig, terms: ClientTerms = NO_TERMS) -> FitResult:
        """Load ``weights``, train locally as ``config`` says, return the new weights.

        ``terms`` (given only when the strategy has client-side terms): add
        ``terms.gradient(name, θ)`` to parameter ``name``'s loss gradient at every step
        (None: nothing to add); with ``terms.report_fisher`` return each parameter's
        mean squared mini-batch gradient at the trained weights under
        ``fedloom.core.terms.FISHER_PREFIX + name``; with ``terms.report_initial_loss``
        report the loaded model's loss on the local data as metric ``initial_loss``.
        Report ``local_steps`` (the number of optimiser steps) in the metrics.
        """
        ...

    def evaluate(self, weights: Weights, config: EvalConfig) -> Mapping[str, float]:
        """Load ``weights`` and return metrics on local data (at least ``loss``; ``accuracy`` if classifying)."""
        ...
