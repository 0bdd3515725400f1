"""An edge aggregator's downstream rounds: served from the top's model, closed with the top's next one.

:class:`RelayRounds` is the synchronous lifecycle (:class:`~fedloom.server.rounds.SyncRounds`)
with three changes, everything else (selection, refusals, deadlines, recording, resume)
being the plain aggregator's:

* once its close policy would close a round, it **publishes** the round's sample-weighted
  mean and sample total to the :class:`~fedloom.server.edge_relay.EdgeRelay` (the upstream
  agent uploads them) and **holds** the round open, refusing further uploads
  (``round_closed``, recorded) so what went upstream is exactly what the store holds;
* it **closes** the round only when the top has moved on: :class:`RelayMean`'s result is
  then the top's next model, so downstream global model r is a model of the top and the
  next round starts from it (after a restart too: the store holds it);
* its leaves train with the **top's** round config (epochs, batch size, lr, extra), and
  only once the top offered it; when the top's run finishes, so does the edge's.

The published mean is computed by :class:`RelayAccumulator` with the very accumulator the
aggregator would use (:class:`~fedloom.algorithms.mean.WeightedMeanAccumulator` through
:class:`~fedloom.algorithms.strategy.WeightedMean`: float64 running mean, cast back,
integers rounded), so the top's weighted mean over edges equals
flat FedAvg over the leaves up to float rounding (docs/deployment.md states the bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedloom.algorithms.strategy import Aggregator, WeightedMean
from fedloom.core.errors import RejectedUpdateError
from fedloom.core.metrics import add_client_metrics, round_client_metrics
from fedloom.core.serialization import content_hash
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.edge_relay import Aggregate, EdgeRelay
from fedloom.server.engine import RoundEngine
from fedloom.server.rounds import ClientTask, ClosePolicy, Decision, Event, RoundAbandoned, SyncRounds

__all__ = ["RelayAccumulator", "RelayMean", "RelayRounds"]


class RelayAccumulator:
    """A downstream round's aggregate (the sample-weighted mean unless the edge was told otherwise),
    and the model that ends the round (the top's)."""

    def __init__(self, reference: Mapping[str, np.ndarray], relay: EdgeRelay, inner: Aggregator) -> None:
        self._inner = inner.start(reference)
        self._relay = relay
        self._base_sha = content_hash(reference)
        self._metric_sums: dict[str, float] = {}
        self.num_samples = 0
        self.count = 0

    @property
    def base_sha256(self) -> str:
        """The hash of the model this round started from."""
        return self._base_sha

    def add(self, update: ClientUpdate) -> None:
        self._inner.add(update)
        add_client_metrics(self._metric_sums, update.metrics, update.num_samples)
        self.num_samples += update.num_samples
        self.count += 1

    def aggregate(self, round: int) -> Aggregate:
        """What the upstream upload carries: the mean, the sample total and the weighted metrics."""
        metrics = round_client_metrics(self._metric_sums, self.num_samples)
        return Aggregate(self._base_sha, round, self._inner.result(), self.num_samples, metrics)

    def result(self) -> Weights:
        """The round's global model: the top's model after the one it started from."""
        following = self._relay.next_global(self._base_sha)
        if following is None:  # RelayRounds closes only once there is one
            raise RuntimeError("an edge round closed before the top aggregator moved on")
        return {name: np.array(value, copy=True) for name, value in following.items()}


@dataclass
class RelayMean:
    """The downstream aggregator part: ``inner``'s aggregate (FedAvg's weighted mean by default)
    handed upstream, the top's next model as the round's result (see the module docstring)."""

    relay: EdgeRelay
    inner: Aggregator = field(default_factory=WeightedMean)
    name: str = "edge_relay_mean"
    mergeable: bool = False  # the aggregate leaves the process, never a partial one
    current: RelayAccumulator | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "inner": self.inner.name}

    def start(self, reference: Mapping[str, np.ndarray]) -> RelayAccumulator:
        self.current = RelayAccumulator(reference, self.relay, self.inner)
        return self.current


class RelayRounds(SyncRounds):
    """An edge's downstream lifecycle (see the module docstring)."""

    def __init__(self, engine: RoundEngine, policy: ClosePolicy, relay: EdgeRelay, mean: RelayMean) -> None:
        super().__init__(engine, policy)
        self.relay, self.mean = relay, mean
        self._published: int | None = None  # the round whose aggregate went to the relay

    @property
    def finished(self) -> bool:
        """The top's run is over and no round is held open (or the edge's own ``max_rounds`` was reached)."""
        return super().finished or (self.relay.finished and self.open_task is None)

    def _open_accumulator(self) -> RelayAccumulator | None:
        current = self.mean.current
        return current if self.open_task is not None and current is not None else None

    def task_for(self, client_id: str) -> ClientTask:
        """The plain task, with the top's round config; ``wait`` until the top offered it, and once
        this round's aggregate went upstream."""
        task = super().task_for(client_id)
        accumulator = self._open_accumulator()
        if task.state != "train" or task.fit is None or accumulator is None:
            return task
        upstream = self.relay.config_for(accumulator.base_sha256)
        if upstream is None or self._published == task.round:
            return ClientTask("wait", task.round, None, task.deadline)
        fit = replace(upstream, round=task.round, seed=task.fit.seed)  # each leaf keeps its own seed
        return ClientTask("train", task.round, fit, task.deadline)

    def submit(self, update: ClientUpdate) -> None:
        """Accept as usual, but refuse (recorded) an update after this round's aggregate went upstream."""
        task = self.open_task
        if task is not None and self._published == task.round and update.round == task.round:
            reason = f"round {task.round}'s aggregate was already forwarded to the upstream aggregator"
            self.engine.reject_client(update.client_id, "round_closed", reason)
            raise RejectedUpdateError("round_closed", reason)
        super().submit(update)

    def tick(self, now: float, *, may_open: bool = True) -> list[Event]:
        """Publish and hold a round its policy would close; close it once the top moved on."""
        accumulator, task = self._open_accumulator(), self.open_task
        if accumulator is not None and task is not None:
            moved_on = self.relay.next_global(accumulator.base_sha256) is not None
            decision = self.policy.decide(self.engine.received(), len(task.selected), now, self.deadline)
            if decision is Decision.CLOSE and not moved_on:
                if self._published != task.round:
                    self.relay.publish(accumulator.aggregate(task.round))
                    self._published = task.round
                return []
            if moved_on and self.relay.finished and decision is not Decision.CLOSE:  # nothing more will come
                received = self.engine.received()
                abandoned = RoundAbandoned(self.engine.abandon_round(), received)
                return [abandoned, *super().tick(now, may_open=False)]
        return super().tick(now, may_open=may_open and not self.relay.finished)
