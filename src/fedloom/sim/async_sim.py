"""Asynchronous FL in simulation, on a simulated clock: FedBuff and FedAsync.

``concurrency`` clients train at once, each on the global model current when it
started; a client's simulated training time comes from :class:`ClientSpeeds`. Events are
processed in simulated-time order, so a straggler's update arrives late and stale.

- ``fedbuff``: every ``buffer_size`` arrivals make a version (weight
  ``num_samples·(1+staleness)^-a``).
- ``fedasync`` (Xie et al. 2019) mixes each arrival in at once:
  ``x ← (1 − α_s) x + α_s x_i`` with ``α_s = mixing·(1 + staleness)^-a``.

Both run through the deployment aggregator's own :class:`AsyncRounds`, so simulation and
deployment share the code.

Training itself runs sequentially in this process; only the clock is simulated.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedloom.algorithms.strategy import ClientSettings
from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.async_rounds import AsyncRounds
from fedloom.sim.clock import ClientSpeeds, training_seconds
from fedloom.sim.executor import ClientFn, fit_one

MODES = ("fedbuff", "fedasync")


@dataclass(frozen=True)
class AsyncSettings:
    """How the asynchronous server behaves; see the module docstring for the formulas."""

    mode: str = "fedbuff"
    concurrency: int = 10
    buffer_size: int = 10
    staleness_exponent: float = 0.5
    mixing: float = 0.6

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"async mode must be one of {MODES}, got {self.mode!r}")
        if self.concurrency < 1 or self.buffer_size < 1:
            raise ConfigError("concurrency and buffer_size must be >= 1")
        if self.staleness_exponent < 0 or not 0 < self.mixing <= 1:
            raise ConfigError("staleness_exponent must be >= 0 and mixing in (0, 1]")


@dataclass(frozen=True)
class TimedPoint:
    """The global model's evaluation at a simulated time."""

    sim_seconds: float
    version: int
    updates: int
    metrics: Mapping[str, float]


@dataclass
class _InFlight:
    finish: float
    order: int
    client: int
    version: int
    weights: Weights = field(compare=False)

    def __lt__(self, other: _InFlight) -> bool:
        return (self.finish, self.order) < (other.finish, other.order)


def simulate_async(
    client_fn: ClientFn,
    num_clients: int,
    initial_weights: Weights,
    client: ClientSettings,
    *,
    client_sizes: Sequence[int],
    total_updates: int,
    settings: AsyncSettings = AsyncSettings(),
    speeds: ClientSpeeds | None = None,
    evaluate_fn: Callable[[Weights], Mapping[str, float]] | None = None,
    evaluate_every: int = 10,
    seed: int = 0,
) -> list[TimedPoint]:
    """Run until ``total_updates`` client updates have arrived; evaluate every ``evaluate_every`` arrivals."""
    if len(client_sizes) != num_clients or total_updates < 1:
        raise ConfigError("client_sizes needs one entry per client and total_updates must be >= 1")
    if settings.mode == "fedbuff" and settings.buffer_size > num_clients:
        raise ConfigError(f"buffer_size ({settings.buffer_size}) cannot exceed the number of clients ({num_clients})")
    speeds = speeds or ClientSpeeds()
    state = _AsyncState(initial_weights, settings)
    pace = speeds.seconds_per_sample(num_clients, seed)
    rng = rng_for(seed, "async-selection")
    idle = set(range(num_clients))
    queue: list[_InFlight] = []
    order = 0

    def launch(now: float) -> None:
        """Top the in-flight clients up to ``concurrency`` (a client trains once per version, as deployed)."""
        nonlocal order
        while len(queue) < settings.concurrency:
            candidates = sorted(c for c in idle if state.may_train(str(c)))
            if not candidates:
                return
            pick = int(rng.choice(candidates))
            idle.discard(pick)
            seconds = training_seconds(pace[pick], client_sizes[pick], client.epochs, speeds.latency_seconds)
            heapq.heappush(queue, _InFlight(now + seconds, order, pick, state.version, state.weights))
            order += 1

    launch(0.0)
    history = [TimedPoint(0.0, 0, 0, dict(evaluate_fn(initial_weights)) if evaluate_fn else {})]
    for arrived in range(1, total_updates + 1):
        job = heapq.heappop(queue)
        config = client.fit_config(job.version + 1, str(job.client), seed + arrived)
        update = fit_one(client_fn, str(job.client), job.weights, config)
        state.arrive(update.weights, update.num_samples, job.version, str(job.client), update.metrics)
        idle.add(job.client)
        launch(job.finish)
        if evaluate_fn and (arrived % evaluate_every == 0 or arrived == total_updates):
            history.append(TimedPoint(job.finish, state.version, arrived, dict(evaluate_fn(state.weights))))
    return history


class _AsyncState:
    """The global model under FedBuff or FedAsync: the deployment aggregator's AsyncRounds."""

    def __init__(self, weights: Weights, settings: AsyncSettings) -> None:
        fedasync = settings.mode == "fedasync"
        self._rounds = AsyncRounds(
            weights,
            version=0,
            buffer_size=1 if fedasync else settings.buffer_size,
            staleness_exponent=settings.staleness_exponent,
            mixing=settings.mixing if fedasync else None,
        )

    @property
    def version(self) -> int:
        return self._rounds.version

    @property
    def weights(self) -> Weights:
        return self._rounds.global_weights

    def may_train(self, client_id: str) -> bool:
        """Whether a client may start training now: once per version, as in deployment."""
        return not self._rounds.has_uploaded(client_id, self.version + 1)

    def arrive(self, weights: Weights, num_samples: int, trained_from: int, client_id: str, metrics: Any) -> None:
        self._rounds.add(ClientUpdate(client_id, trained_from + 1, weights, num_samples, metrics))
        if self._rounds.ready:
            self._rounds.advance(self._rounds.result())
