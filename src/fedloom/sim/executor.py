"""Executors run the selected clients of a round and yield their results.

The sequential executor is the reference: one process, clients in sorted order, so a
run is bit-for-bit reproducible. Faster executors must yield the same kinds of results.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.client.client_state import LocalContext, fit_with_state
from fedloom.client.compressed_upload import as_received
from fedloom.client.fit_check import checked_fit_result
from fedloom.client.trainer import Trainer
from fedloom.core.fit import FitConfig
from fedloom.core.update import ClientUpdate, UpdateReport
from fedloom.core.weights import Weights
from fedloom.sim.cohort.setting import parse_cohort

ClientFn = Callable[[int], Trainer]


@dataclass(frozen=True)
class ClientFailure:
    """A client whose trainer raised or returned something unusable; ``details`` has the traceback."""

    client_id: str
    round: int
    message: str
    details: str
    code: str = "client_failed"


@dataclass(frozen=True)
class MergedUpdates:
    """A worker's pre-merged partial sum and one report per client folded into it."""

    reports: list[UpdateReport]
    partial: WeightedMeanAccumulator


ExecutorResult = ClientUpdate | ClientFailure | MergedUpdates


class Executor(Protocol):
    """Runs ``fit`` for every selected client of a round.

    With ``merge=True`` (the strategy's aggregator is mergeable) an executor may yield
    :class:`MergedUpdates` instead of individual updates. ``state_dir`` is the run's local
    client-state folder (the local context of every fit, kept apart from the configs).
    """

    def run_round(
        self,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        client_fn: ClientFn,
        merge: bool = False,
        state_dir: str | None = None,
    ) -> Iterator[ExecutorResult]: ...

    def close(self) -> None: ...


def fit_one(
    client_fn: ClientFn, client_id: str, weights: Weights, config: FitConfig, state_dir: str | None = None
) -> ClientUpdate:
    """Build the client's trainer, train it, and wrap the result as a ClientUpdate.

    State a client keeps between rounds (personal keys, the client parts' state) lives
    under ``state_dir``, the run's local folder (never part of the wire's ``config``);
    see fedloom.client.client_state.
    """
    return fit_trainer(client_fn(int(client_id)), client_id, weights, config, state_dir)


def fit_trainer(
    trainer: Trainer, client_id: str, weights: Weights, config: FitConfig, state_dir: str | None = None
) -> ClientUpdate:
    """:func:`fit_one` with the client's trainer already built (the cohort runner's per-client path)."""
    context = LocalContext(client_id, state_dir)
    result = checked_fit_result(fit_with_state(trainer, weights, config, context), config.round)
    result = as_received(result, weights, config, context)
    return ClientUpdate(client_id, config.round, result.weights, result.num_samples, dict(result.metrics))


class SequentialExecutor:
    """Trains the selected clients one after another in this process, or, with ``cohort``
    ``"auto"`` or a size N, together as batched cohorts (fedloom.sim.cohort) where the model
    is safe for it; ``"off"`` (the Python default) is the bit-for-bit reference."""

    cohort: str | int = "off"  # a class default too: subclasses that skip __init__ train one by one

    def __init__(self, cohort: str | int = "off") -> None:
        self.cohort = parse_cohort(cohort)

    def run_round(
        self,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        client_fn: ClientFn,
        merge: bool = False,
        state_dir: str | None = None,
    ) -> Iterator[ExecutorResult]:
        if self.cohort != "off":  # cohort training (issue 13): same clients, seeds and failures, batched
            from fedloom.sim.cohort.runner import run_cohort_round

            yield from run_cohort_round(round, weights, configs, client_fn, state_dir, self.cohort)
            return
        for client_id, config in configs.items():
            try:
                yield fit_one(client_fn, client_id, weights, config, state_dir)
            except Exception as exc:  # a user trainer may raise anything; reported, never swallowed
                yield ClientFailure(client_id, round, f"{type(exc).__name__}: {exc}", traceback.format_exc())

    def close(self) -> None:
        """Nothing to release: everything ran in this process."""
