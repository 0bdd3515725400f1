"""The agent's side of a round's training: the site's Trainer, run and checked as the simulation does.

:class:`WithSiteState` trains through :func:`~fedloom.client.client_state.fit_with_state`
(the state a site keeps between rounds lives in the agent's directory), and
:func:`fit_checked` turns anything wrong with what the Trainer returns into a
ClientError naming the round, with the very check the simulation applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.client.fit_check import checked_fit_result
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ClientError, ValidationError
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.terms import NO_TERMS, ClientTerms
from fedloom.core.weights import Weights, check_finite, check_structure

__all__ = ["WithSiteState", "checked_weights", "fit_checked"]


class WithSiteState:
    """The user's Trainer, trained with the state this site keeps between rounds
    (personal tensors, the client parts' state) in the agent's directory."""

    def __init__(self, trainer: Trainer, directory: Path) -> None:
        self.trainer, self.directory = trainer, directory

    def get_weights(self) -> Weights:
        return self.trainer.get_weights()

    def fit(self, weights: Weights, config: FitConfig, terms: ClientTerms = NO_TERMS) -> FitResult:
        """The round's fit through the one client-side function the simulation uses too (``terms``
        come from the client parts the config names, not from the caller)."""
        return fit_with_state(self.trainer, weights, config, LocalContext("agent", self.directory))

    def evaluate(self, weights: Weights, config: EvalConfig) -> dict[str, float]:
        return dict(self.trainer.evaluate(weights, config))


def fit_checked(trainer: Trainer, weights: Weights, config: Any) -> tuple[Weights, int, dict[str, float]]:
    """Run ``trainer.fit`` and check what it returned; any problem becomes a ClientError naming the round."""
    try:
        result = trainer.fit(weights, config)
    except ClientError:
        raise
    except Exception as exc:
        raise ClientError(f"round {config.round}: trainer.fit raised {type(exc).__name__}: {exc}") from exc
    checked = checked_fit_result(result, config.round)  # the same check as the simulation's
    return checked.weights, checked.num_samples, dict(checked.metrics)


def checked_weights(weights: Any, what: str) -> Weights:
    """``weights`` if they are a finite name -> array mapping, else a ClientError naming ``what`` gave them."""
    try:
        check_structure(weights)
        check_finite(weights)
    except ValidationError as exc:
        raise ClientError(f"{what} returned unusable weights: {exc}") from None
    return dict(weights)
