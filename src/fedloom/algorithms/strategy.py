"""A Strategy is composed, not inherited: a client sampler + an aggregator + client config.

Later algorithms (server optimisers, robust aggregators, client-side terms) plug into
these slots instead of sub-classing a base strategy, so each piece stays small and
testable on its own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedloom.algorithms.dp_sgd_settings import DP_SGD_KEY
from fedloom.algorithms.filtering import ModelFilter
from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.algorithms.sampling import ClientSampler
from fedloom.algorithms.server_opt import ServerOptimizer
from fedloom.algorithms.units import CLIENT_PARTS_KEY, Describable, HasClientPart, Named, SeedsInitialModel
from fedloom.core.compression import EXTRA_KEY as COMPRESSION_KEY
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitConfig
from fedloom.core.rng import stream_key
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights


class Accumulator(Protocol):
    """Folds client updates into an aggregate as they arrive."""

    count: int

    def add(self, update: ClientUpdate) -> None: ...

    def result(self) -> Weights: ...


@runtime_checkable
class MergeableAccumulator(Accumulator, Protocol):
    """An accumulator whose partial results can be combined (sum-type aggregates)."""

    def merge(self, other: WeightedMeanAccumulator) -> None: ...

    def partial_sums(self) -> tuple[Weights, float, int]: ...


class Aggregator(Protocol):
    """Makes a fresh accumulator for each round.

    ``mergeable`` says whether partial accumulators (e.g. one per simulation worker) may
    be merged; aggregators that need every update (median, Krum, ...) say False and
    receive each update individually.
    """

    @property
    def name(self) -> str: ...

    @property
    def mergeable(self) -> bool: ...

    def start(self, reference: Mapping[str, np.ndarray]) -> Accumulator: ...


@runtime_checkable
class SizedAggregator(Aggregator, Protocol):
    """An aggregator whose maths need N, the number of clients in the federation.

    SCAFFOLD moves its control variate by ``(|S|/N)·mean Δc_i``; only the round engine
    knows the registered clients, so it hands N over when the round starts
    (:meth:`Strategy.start_accumulator`).
    """

    def start_sized(self, reference: Mapping[str, np.ndarray], num_clients: int) -> Accumulator: ...


def describe_part(part: object) -> Any:
    """A strategy part's JSON description: its ``describe()`` when it has one, else its name."""
    if isinstance(part, Describable):
        return part.describe()
    return part.name if isinstance(part, Named) else None


@dataclass(frozen=True)
class WeightedMean:
    """FedAvg's aggregator: the sample-weighted mean, streamed and mergeable."""

    name: str = "weighted_mean"
    mergeable: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def start(self, reference: Mapping[str, np.ndarray]) -> WeightedMeanAccumulator:
        return WeightedMeanAccumulator(reference)


@dataclass(frozen=True)
class ClientSettings:
    """Local training settings sent to every selected client (E, B, lr and extras)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    extra: Mapping[str, Any] = field(default_factory=dict)

    def fit_config(self, round: int, client_id: str, seed: int) -> FitConfig:
        """The FitConfig of one client in one round; its seed is derived from (seed, round, client)."""
        return FitConfig(
            round=round,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=stream_key(seed, "fit", round, client_id) % (2**31),
            extra=dict(self.extra),
        )


@dataclass(frozen=True)
class RoundCriteria:
    """When a synchronous round may be aggregated.

    ``threshold`` is the fraction of the selected clients whose updates are needed;
    ``min_updates`` is an absolute floor. Simulation waits for every selected client;
    deployment (with deadlines) closes a round once the criteria hold.
    """

    threshold: float = 1.0
    min_updates: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.min_updates < 1:
            raise ConfigError(f"min_updates must be >= 1, got {self.min_updates}")

    def required(self, num_selected: int) -> int:
        """Number of accepted updates needed to aggregate a round that selected ``num_selected``."""
        return min(num_selected, max(self.min_updates, int(np.ceil(self.threshold * num_selected - 1e-9))))


@dataclass(frozen=True)
class Strategy:
    """Everything that decides what a round does, as named, swappable parts.

    ``server_opt`` (optional) turns the aggregate into the next global model (FedAdam,
    ...); ``update_filter`` (optional) refuses local models out of bounds before they
    reach the aggregator; ``personal_keys`` (glob patterns) name tensors each client
    keeps for itself (FedPer/FedBN): the global model's values for them never change.
    """

    name: str
    sampler: ClientSampler
    aggregator: Aggregator
    client: ClientSettings
    criteria: RoundCriteria = RoundCriteria()
    server_opt: ServerOptimizer | None = None
    update_filter: ModelFilter | None = None
    personal_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """An aggregator with a client part whose clients are not told to run it would refuse
        every update (they would lack its reserved tensors): refused here, where it is built."""
        if isinstance(self.aggregator, HasClientPart):
            part = self.aggregator.client_part().name
            if part not in self.client.extra.get(CLIENT_PARTS_KEY, ()):
                raise ConfigError(
                    f"aggregator {part!r} has a client part, but ClientSettings.extra[{CLIENT_PARTS_KEY!r}] does "
                    f"not name it; add {part!r} there, or build the strategy with registry.build_strategy"
                )

    @property
    def keeps_client_state(self) -> bool:
        """Whether clients keep state between rounds (personal keys, a client part that keeps state,
        or DP-SGD's count of the steps each client has taken, or compression's error-feedback residual)."""
        if isinstance(self.aggregator, HasClientPart) and self.aggregator.client_part().keeps_state:
            return True
        extra = self.client.extra
        return bool(self.personal_keys) or DP_SGD_KEY in extra or COMPRESSION_KEY in extra

    def initial_weights(self, weights: Mapping[str, np.ndarray]) -> Weights:
        """The first global model: the user's, plus any state the aggregator keeps inside it
        (SCAFFOLD's control variate, FedCurv's Fisher sums)."""
        if isinstance(self.aggregator, SeedsInitialModel):
            return self.aggregator.initial(weights)
        return dict(weights)

    def start_accumulator(self, reference: Mapping[str, np.ndarray], num_clients: int) -> Accumulator:
        """The accumulator of a round that starts from ``reference`` in a federation of
        ``num_clients`` registered clients (passed on only to a :class:`SizedAggregator`)."""
        if isinstance(self.aggregator, SizedAggregator):
            return self.aggregator.start_sized(reference, num_clients)
        return self.aggregator.start(reference)

    def shared(self, name: str) -> bool:
        """Whether tensor ``name`` is aggregated (personal keys are not)."""
        return not any(fnmatch.fnmatchcase(name, p) for p in self.personal_keys)

    @property
    def mergeable(self) -> bool:
        """Whether executors may pre-merge updates: only for a mergeable aggregator and no filter
        (a filter must see every update on its own)."""
        return self.aggregator.mergeable and self.update_filter is None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description stored with every run."""
        return {
            "name": self.name,
            "fraction": self.sampler.fraction,
            "min_clients": self.sampler.min_clients,
            "aggregator": describe_part(self.aggregator),
            "server_opt": describe_part(self.server_opt) if self.server_opt else None,
            "filter": self.update_filter.describe() if self.update_filter else None,
            "personal_keys": list(self.personal_keys),
            "epochs": self.client.epochs,
            "batch_size": self.client.batch_size,
            "lr": self.client.lr,
            "extra": dict(self.client.extra),
            "threshold": self.criteria.threshold,
            "min_updates": self.criteria.min_updates,
        }


def fedavg(
    fraction: float = 0.1,
    min_clients: int = 1,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.01,
    criteria: RoundCriteria | None = None,
) -> Strategy:
    """FedAvg (McMahan et al., 2017): sample C·K clients, E local epochs of batch B, weighted mean."""
    from fedloom.algorithms.registry import build_strategy  # the registry builds on this module

    return build_strategy(
        "fedavg",
        fraction=fraction,
        min_clients=min_clients,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        criteria=criteria,
    )
