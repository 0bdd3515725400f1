"""Asynchronous rounds (FedBuff, FedAsync) behind the same interface as :class:`SyncRounds`.

Any client may train at any time on the newest global model, once per version it
trained from; every ``buffer_size`` accepted arrivals make the next version
(:class:`AsyncRounds` holds the maths). Arrivals are recorded *before* they count and
each version before it becomes the global model, through the same recorder the
synchronous engine uses, so the deployed aggregator and the simulation record alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fedloom.algorithms.strategy import ClientSettings
from fedloom.core.errors import ConfigError, RejectedUpdateError
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.async_rounds import AsyncRounds, AsyncVersion
from fedloom.server.engine import RoundOutcome, RoundRecorder
from fedloom.server.rounds.events import ClientTask, Event, RoundClosed, RunFinished


@dataclass(frozen=True)
class AsyncSettings:
    """How an asynchronous run aggregates: the ``[async]`` table of a deployment, and
    ``simulate(asynchronous=...)``'s settings — one type, one set of defaults.

    ``mixing = 0`` is FedBuff (each version is the staleness-weighted mean of a full
    buffer); ``mixing`` in (0, 1] is FedAsync (that mean mixed into the current model,
    exactly FedAsync with ``buffer_size = 1``).
    """

    buffer_size: int = 2
    staleness_exponent: float = 0.5
    mixing: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.buffer_size, bool) or not isinstance(self.buffer_size, int) or self.buffer_size < 1:
            raise ConfigError(f"[async] buffer_size must be an integer >= 1, got {self.buffer_size!r}")
        if not 0.0 <= self.mixing <= 1.0:
            raise ConfigError(f"[async] mixing must be in [0, 1] (0 = FedBuff), got {self.mixing!r}")
        if not (self.staleness_exponent >= 0 and math.isfinite(self.staleness_exponent)):
            raise ConfigError(f"[async] staleness_exponent must be >= 0, got {self.staleness_exponent!r}")

    @classmethod
    def fedasync(cls, mixing: float = 0.6, staleness_exponent: float = 0.5) -> AsyncSettings:
        """FedAsync (Xie et al. 2019): every arrival mixed in at once."""
        return cls(buffer_size=1, staleness_exponent=staleness_exponent, mixing=mixing)

    @property
    def name(self) -> str:
        return "fedasync" if self.mixing > 0 else "fedbuff"

    def start(
        self, weights: Weights, version: int, max_versions: int | None, uploaded: Iterable[tuple[str, int]] = ()
    ) -> AsyncRounds:
        """The buffer of a run at ``version`` (``uploaded``: the (client, round) pairs already taken)."""
        return AsyncRounds(
            weights,
            version=version,
            buffer_size=self.buffer_size,
            staleness_exponent=self.staleness_exponent,
            mixing=self.mixing or None,
            max_versions=max_versions,
            uploaded=uploaded,
        )


def version_outcome(version: AsyncVersion) -> RoundOutcome:
    """A new version as a round outcome (the version number plays the round's part)."""
    return RoundOutcome(
        round=version.version,
        weights=version.weights,
        num_updates=version.num_updates,
        num_samples=version.num_samples,
        client_metrics=version.client_metrics,
        missing=(),
        num_rejected=0,
        seconds=0.0,
    )


class AsyncLifecycle:
    """The buffer of an asynchronous run, ticked by a clock like the synchronous rounds."""

    mode = "async"

    def __init__(
        self, rounds: AsyncRounds, client: ClientSettings, seed: int, recorder: RoundRecorder | None = None
    ) -> None:
        self.rounds = rounds
        self.client = client
        self.seed = seed
        self.recorder = recorder
        self._finish_reported = False

    @property
    def current_round(self) -> int:
        return self.rounds.current_round

    @property
    def finished(self) -> bool:
        return self.rounds.finished

    @property
    def rounds_completed(self) -> int:
        return self.rounds.version

    @property
    def global_weights(self) -> Weights:
        return self.rounds.global_weights

    def received_count(self) -> int:
        return len(self.rounds.buffered)

    def may_train(self, client_id: str) -> bool:
        """Whether ``client_id`` may start training now (once per version it trains from)."""
        return (
            not self.finished and not self.rounds.ready and not self.rounds.has_uploaded(client_id, self.current_round)
        )

    def task_for(self, client_id: str) -> ClientTask:
        if self.finished:
            return ClientTask("finished", self.rounds_completed)
        current = self.current_round
        if self.may_train(client_id):
            return ClientTask("train", current, self.client.fit_config(current, client_id, self.seed))
        return ClientTask("wait", current)

    def submit(self, update: ClientUpdate) -> None:
        """Take an arrival into the buffer (recorded first), or raise and record why not."""
        if self.rounds.ready:
            raise RejectedUpdateError("busy", "the previous buffer is still being aggregated: send again shortly")
        problem = self.rounds.check(update)
        if problem:
            if self.recorder:
                self.recorder.update_rejected(update.round, update.client_id, *problem)
            raise RejectedUpdateError(*problem)
        if self.recorder:
            self.recorder.update_accepted(update.report(), update.weights)
        self.rounds.add(update)

    def reject(self, client_id: str, code: str, reason: str) -> None:
        if self.recorder:
            self.recorder.update_rejected(self.current_round, client_id, code, reason)

    def tick(self, now: float, *, may_open: bool = True) -> list[Event]:
        """Make every version a full buffer allows (recorded before it counts)."""
        del now, may_open  # versions follow arrivals, not time
        events: list[Event] = []
        while self.rounds.ready and not self.finished:
            version = self.rounds.result()
            outcome = version_outcome(version)
            if self.recorder:
                self.recorder.version_made(outcome)
            self.rounds.advance(version)
            events.append(RoundClosed(outcome))
        if self.finished and not self._finish_reported:
            self._finish_reported = True
            events.append(RunFinished(self.rounds_completed))
        return events
