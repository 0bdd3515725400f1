"""Sample-level DP-SGD on a client: who may do it, and the (ε, δ) each client has spent so far.

A run asks for DP-SGD by sending :class:`~fedloom.algorithms.dp_sgd_settings.DPSGDSettings`
in ``FitConfig.extra["dp_sgd"]``. Only a trainer that implements :class:`TrainsWithDPSGD`
(the built-in :class:`~fedloom.client.torch_trainer.TorchTrainer` does) may answer such a
round; any other trainer is refused before it trains, because training without the
noise while the run believes it is private is the one failure that must never be silent.

ε is a property of everything a client has released, so the count of DP-SGD steps a
client has taken lives in its local state directory (one JSON file per client, written
atomically), which persists across rounds in simulation and deployment. After each fit
the client composes all its steps with the maintained accountant
(:func:`fedloom.algorithms.privacy_accountant.gaussian_epsilon`, Poisson sampling at rate
q = B/n) and reports ``privacy/dp_sgd_epsilon`` / ``privacy/dp_sgd_delta`` as client
metrics, so the store keeps the value per client per round.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fedloom.algorithms.dp_sgd_settings import DELTA_METRIC, DP_SGD_KEY, EPSILON_METRIC, STEPS_METRIC, DPSGDSettings
from fedloom.algorithms.privacy_accountant import Poisson, gaussian_epsilon
from fedloom.core.errors import ClientError
from fedloom.core.fit import FitResult

#: client metrics reported after every DP-SGD fit (stored per client per round)
#: the folder of a client's state directory that holds its step ledger
LEDGER_FOLDER = "dp_sgd"


@runtime_checkable
class TrainsWithDPSGD(Protocol):
    """A Trainer whose ``fit`` trains with DP-SGD whenever ``config.extra`` carries ``dp_sgd``.

    Its fit must clip each example's gradient to ``max_grad_norm``, add Gaussian noise of
    std ``noise_multiplier · max_grad_norm`` to each step's sum, draw each step's batch by
    Poisson sampling at :meth:`dp_sgd_sample_rate`, and report the steps as ``local_steps``.
    """

    def dp_sgd_sample_rate(self, batch_size: int) -> float:
        """The Poisson rate q of one step for batch size B (B over the local examples, at most 1)."""
        ...


def poisson_rate(batch_size: int, num_examples: int) -> float:
    """q = B / n, capped at 1: each example joins a step's batch with this probability."""
    return min(1.0, batch_size / num_examples)


def dp_sgd_capable(trainer: object) -> TrainsWithDPSGD:
    """``trainer`` if it can train with DP-SGD, else a ClientError saying what to use instead."""
    if isinstance(trainer, TrainsWithDPSGD):
        return trainer
    raise ClientError(
        f"this run trains with sample-level DP-SGD ({DP_SGD_KEY} in the fit config), but "
        f"{type(trainer).__name__} cannot: it would train without noise while the run reports a privacy "
        "guarantee. Use fedloom's TorchTrainer, or implement dp_sgd_sample_rate() and DP-SGD in your "
        "Trainer (fedloom.client.dp_sgd.TrainsWithDPSGD); or run without --dp-sgd"
    )


@dataclass(frozen=True)
class StepLedger:
    """All DP-SGD steps one client has taken, with the weakest settings it took them under.

    The accountant composes one (z, q) pair; if a client's settings ever changed, its
    steps are accounted at the smallest z and the largest q seen, whose ε is an upper
    bound of the true one (ε grows with q and shrinks with z).
    """

    steps: int = 0
    noise_multiplier: float = math.inf
    sample_rate: float = 0.0

    def plus(self, steps: int, noise_multiplier: float, sample_rate: float) -> StepLedger:
        return StepLedger(
            self.steps + steps, min(self.noise_multiplier, noise_multiplier), max(self.sample_rate, sample_rate)
        )

    def epsilon(self, delta: float) -> float:
        if self.steps == 0:
            return 0.0
        return gaussian_epsilon(self.noise_multiplier, Poisson(self.sample_rate), self.steps, delta)


class LedgerStore:
    """One JSON ledger per client under ``<state dir>/dp_sgd/``, replaced atomically."""

    def __init__(self, state_dir: str | Path) -> None:
        self.directory = Path(state_dir) / LEDGER_FOLDER

    def _path(self, client_id: str) -> Path:
        if not client_id or "/" in client_id or client_id.startswith("."):
            raise ClientError(f"client id {client_id!r} cannot name a DP-SGD ledger file")
        return self.directory / f"{client_id}.json"

    def load(self, client_id: str) -> StepLedger:
        path = self._path(client_id)
        if not path.exists():
            return StepLedger()
        try:
            return _ledger_from(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise ClientError(
                f"the DP-SGD step ledger {path} is unreadable ({exc}); the client's ε cannot be accounted. "
                "Restore it from a backup; deleting it would under-report ε"
            ) from None

    def save(self, client_id: str, ledger: StepLedger) -> None:
        """Write atomically: a crash leaves the previous ledger or the new one, never half of one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(client_id)
        tmp = path.with_suffix(".tmp")
        body = {"steps": ledger.steps, "noise_multiplier": ledger.noise_multiplier, "sample_rate": ledger.sample_rate}
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)


def _ledger_from(body: Any) -> StepLedger:
    steps, z, q = body["steps"], body["noise_multiplier"], body["sample_rate"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not (isinstance(z, (int, float)) and z > 0 and isinstance(q, (int, float)) and 0 <= q <= 1):
        raise ValueError(f"noise_multiplier {z!r} / sample_rate {q!r} out of range")
    return StepLedger(steps, float(z), float(q))


def fit_steps(metrics: Mapping[str, float]) -> int:
    """The DP-SGD steps a fit reports (``local_steps``), or a ClientError: unaccounted steps are refused."""
    value = metrics.get("local_steps")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ClientError(
            f"a DP-SGD fit must report its number of noisy steps as metric 'local_steps' (got {value!r}); "
            "without it the client's ε cannot be accounted"
        )
    return int(value)


def accounted(
    result: FitResult, settings: DPSGDSettings, sample_rate: float, store: LedgerStore, client_id: str
) -> FitResult:
    """``result`` with this client's ε after all its DP-SGD steps so far (the ledger is updated first)."""
    if not isinstance(result, FitResult):
        raise ClientError(f"Trainer.fit must return a FitResult, got {type(result).__name__}")
    ledger = store.load(client_id).plus(fit_steps(result.metrics), settings.noise_multiplier, sample_rate)
    epsilon = ledger.epsilon(settings.delta)
    store.save(client_id, ledger)
    privacy = {EPSILON_METRIC: epsilon, DELTA_METRIC: settings.delta, STEPS_METRIC: float(ledger.steps)}
    return FitResult(result.weights, result.num_samples, {**result.metrics, **privacy})
