"""Asynchronous rounds (FedBuff, Nguyen et al. 2022) with polynomial staleness weighting.

Every agent may train at any time on the newest global model. Rounds keep the meaning
they have in synchronous mode: round ``R`` is the round that the global model of
*version* ``R - 1`` starts (version 0 is the initial model), so an upload for round
``R`` says "trained from version ``R - 1``". Each accepted upload is folded into a
:class:`WeightedMeanAccumulator` with weight

    num_samples * (1 + staleness) ** -staleness_exponent,   staleness = current round - upload round

and every ``buffer_size`` arrivals make the next version: the weighted mean of the
buffered models. An agent may send one update per round it trained from.

With ``mixing`` set (FedAsync, Xie et al. 2019) the next version instead mixes that
mean into the current model, ``x ← (1 − α) x + α x̄`` with
``α = mixing · (1 + s̄) ** -staleness_exponent`` and ``s̄`` the buffer's mean staleness;
with ``buffer_size = 1`` this is FedAsync exactly.

The class is pure state (no I/O, no clock): the aggregator records each arrival
*before* calling :meth:`AsyncRounds.add`, and each new version before
:meth:`AsyncRounds.advance`, so the database stays the commit point.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedloom.algorithms.casting import cast_like
from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.core.errors import ConfigError, ValidationError
from fedloom.core.metrics import add_client_metrics, round_client_metrics
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights, copy_weights, validate_weights


def staleness_weight(num_samples: int, staleness: int, exponent: float) -> float:
    """FedBuff's aggregation weight of an update ``staleness`` versions old."""
    if staleness < 0:
        raise ValidationError(f"staleness must be >= 0, got {staleness}")
    return float(num_samples) * float((1.0 + staleness) ** -exponent)


@dataclass(frozen=True)
class AsyncVersion:
    """A new global version made from one full buffer."""

    version: int
    weights: Weights
    num_updates: int
    num_samples: int
    client_metrics: dict[str, float]


class AsyncRounds:
    """The buffer and version counter of an asynchronous run.

    ``version`` is the newest global model's version; :attr:`current_round` (``version + 1``)
    is the round agents train for now. ``uploaded`` holds the ``(client_id, round)``
    pairs already accepted (a restarted aggregator passes what the store holds).
    """

    def __init__(
        self,
        global_weights: Weights,
        *,
        version: int,
        buffer_size: int,
        staleness_exponent: float,
        max_versions: int | None = None,
        uploaded: Iterable[tuple[str, int]] = (),
        mixing: float | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ConfigError(f"buffer_size must be >= 1, got {buffer_size}")
        if staleness_exponent < 0:
            raise ConfigError(f"staleness_exponent must be >= 0, got {staleness_exponent}")
        if mixing is not None and not 0 < mixing <= 1:
            raise ConfigError(f"mixing must be in (0, 1], got {mixing}")
        validate_weights(global_weights)
        self.mixing = mixing
        self.version = version
        self.buffer_size = buffer_size
        self.staleness_exponent = staleness_exponent
        self.max_versions = max_versions
        self._global = copy_weights(global_weights)
        self._uploaded = set(uploaded)
        self._reset()

    def _reset(self) -> None:
        self._acc = WeightedMeanAccumulator(self._global)
        self._clients: list[str] = []
        self._samples = 0
        self._metric_sums: dict[str, float] = {}
        self._staleness_total = 0

    # -- state -------------------------------------------------------------------
    @property
    def current_round(self) -> int:
        return self.version + 1

    @property
    def finished(self) -> bool:
        return self.max_versions is not None and self.version >= self.max_versions

    @property
    def global_weights(self) -> Weights:
        return copy_weights(self._global)

    @property
    def buffered(self) -> tuple[str, ...]:
        """The clients whose updates wait in the buffer, in arrival order."""
        return tuple(self._clients)

    @property
    def ready(self) -> bool:
        """True when the buffer is full and must be aggregated before more arrivals are taken."""
        return len(self._clients) >= self.buffer_size

    def has_uploaded(self, client_id: str, round: int) -> bool:
        return (client_id, round) in self._uploaded

    # -- arrivals ----------------------------------------------------------------
    def check(self, update: ClientUpdate) -> tuple[str, str] | None:
        """The (code, reason) for refusing ``update``, or None; checking changes nothing."""
        if self.finished:
            return "round_closed", f"the run is finished (version {self.version} was the last)"
        if update.round > self.current_round or update.round < 1:
            return "wrong_round", f"update is for round {update.round} but the newest round is {self.current_round}"
        if (update.client_id, update.round) in self._uploaded:
            return "duplicate", f"client {update.client_id!r} already sent an update for round {update.round}"
        try:
            validate_weights(update.weights, self._global)
        except ValidationError as exc:
            return "invalid_weights", str(exc)
        return None

    def weight_of(self, update: ClientUpdate) -> float:
        """The aggregation weight ``update`` would get now."""
        return staleness_weight(update.num_samples, self.current_round - update.round, self.staleness_exponent)

    def add(self, update: ClientUpdate) -> float:
        """Fold an update (already checked with :meth:`check`) into the buffer; returns its weight."""
        problem = self.check(update)
        if problem:
            raise ValidationError(f"update refused ({problem[0]}): {problem[1]}")
        if self.ready:
            raise ValidationError("the buffer is full: aggregate it (advance) before adding more updates")
        weight = self.weight_of(update)
        self._acc.add_weights(update.weights, weight)
        self._staleness_total += self.current_round - update.round
        self._uploaded.add((update.client_id, update.round))
        self._clients.append(update.client_id)
        self._samples += update.num_samples
        add_client_metrics(self._metric_sums, update.metrics, update.num_samples)
        return weight

    # -- versions ----------------------------------------------------------------
    def result(self) -> AsyncVersion:
        """The next version from the buffered updates, without changing any state."""
        if not self._clients:
            raise ValidationError("cannot aggregate: the buffer is empty")
        weights = self._mixed(self._acc.result())
        validate_weights(weights, self._global)
        metrics = round_client_metrics(self._metric_sums, self._samples)
        return AsyncVersion(self.version + 1, weights, len(self._clients), self._samples, metrics)

    def _mixed(self, mean: Weights) -> Weights:
        """FedAsync: mix the buffer's mean into the current model (FedBuff: take the mean)."""
        if self.mixing is None:
            return mean
        staleness = self._staleness_total / len(self._clients)
        alpha = self.mixing * (1.0 + staleness) ** -self.staleness_exponent
        out: Weights = {}
        for name, current in self._global.items():
            if current.dtype.kind != "f":
                out[name] = mean[name]
                continue
            out[name] = cast_like((1 - alpha) * current.astype(np.float64) + alpha * mean[name], current)
        return out

    def advance(self, version: AsyncVersion) -> None:
        """Make ``version`` (from :meth:`result`, once it is recorded) the global model; empty the buffer."""
        if version.version != self.version + 1:
            raise ValidationError(f"version {version.version} does not follow version {self.version}")
        self._global = copy_weights(version.weights)
        self.version = version.version
        self._reset()
