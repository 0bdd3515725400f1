"""A synchronous round whose updates arrive through secure aggregation, closed by the one engine.

The engine never sees a local model: it takes the unmasked *sum*, turned into a
:class:`~fedloom.algorithms.mean.WeightedMeanAccumulator` partial, through
``submit_merged`` — the path simulation workers use for pre-merged updates — and the
round closes through the lifecycle's ``tick``, so recording, the server optimiser,
lineage and resume are the same as for plain FedAvg. Each contributor leaves an
:class:`UpdateReport` (client, samples, metrics) whose ``sha256`` is that of the masked
vector the server received: the server holds no local model to hash, and a hash of one
would let it confirm a guess of the model.

A refused protocol round (too few clients left, or a secret that cannot be rebuilt) is
recorded as a rejection of every client still in it with the code
``secagg_below_threshold`` and the protocol's reason, then the round is abandoned: no
model is made from a sum that could be wrong. Clients that dropped out at a stage before
sending their masked input are recorded as ``secagg_dropped`` with the stage.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from fedloom.algorithms.mean import WeightedMeanAccumulator
from fedloom.algorithms.secagg.codec import RingLayout
from fedloom.algorithms.secagg.compat import uniform_weights
from fedloom.algorithms.secagg.server import SecAggFailure, SecAggResult, SecAggServerRound
from fedloom.algorithms.secagg.settings import SecAggSettings
from fedloom.core.update import UpdateReport
from fedloom.server.rounds.events import Event, RoundAbandoned
from fedloom.server.rounds.sync import SyncRounds

DROPPED = "secagg_dropped"
MISMATCH = "secagg_mismatch"


@dataclass(frozen=True)
class Contribution:
    """What the server knows of one contributor besides its masked vector: its claimed
    sample count and training metrics (as a plain upload's header carries them)."""

    num_samples: int
    metrics: Mapping[str, float]


class SecureRounds:
    """Secure aggregation over a :class:`SyncRounds`: one protocol round per engine round."""

    def __init__(self, lifecycle: SyncRounds, settings: SecAggSettings) -> None:
        self.lifecycle = lifecycle
        self.settings = settings

    @property
    def uniform(self) -> bool:
        """True when every client enters the sum with weight 1 instead of its sample count."""
        return uniform_weights(self.lifecycle.engine.strategy)

    def weight_of(self, num_samples: int) -> int:
        """What a client with ``num_samples`` puts into the ring as its weight."""
        return 1 if self.uniform else num_samples

    def layout(self) -> RingLayout:
        """The ring layout of the current global model (what every client encodes against)."""
        return RingLayout(self.lifecycle.global_weights, self.settings)

    def start(self) -> SecAggServerRound:
        """The protocol's server side for the open round, over its selected clients."""
        task = self.lifecycle.open_task
        if task is None:
            raise ValueError("no round is open to aggregate securely")
        return SecAggServerRound(task.round, task.selected, self.settings, self.lifecycle.engine.seed, self.layout())

    def finish(
        self,
        protocol: SecAggServerRound,
        contributions: Mapping[str, Contribution],
        now: float,
        refusals: Mapping[str, str] | None = None,
        absent: Collection[str] = (),
    ) -> list[Event]:
        """Record dropouts, then close the round from the unmasked sum or abandon it with the reason.

        ``refusals`` are the reasons clients gave for stopping (known in simulation; a deployed
        server only sees that a client stopped answering); ``absent`` are clients whose absence
        the caller has already recorded (in simulation: dropped or failed before training)."""
        engine = self.lifecycle.engine
        result = protocol.aggregate()
        contributed = set(result.contributors) if isinstance(result, SecAggResult) else set()
        said = refusals or {}
        for cid, stage in sorted(protocol.dropped.items()):
            if cid not in contributed and cid not in absent:
                why = f": it refused, {said[cid]}" if cid in said else ""
                engine.reject_client(
                    cid, DROPPED, f"the client dropped out of secure aggregation at stage {stage!r}{why}"
                )
        if isinstance(result, SecAggResult):
            problem = self._mismatch(result, contributions, self.uniform)
            if problem is None:
                return self._close(protocol, result, contributions, now)
            result = SecAggFailure(MISMATCH, "unmask", result.contributors, protocol.threshold, problem)
        return self._abandon(result)

    @staticmethod
    def _mismatch(result: SecAggResult, contributions: Mapping[str, Contribution], uniform: bool) -> str | None:
        claimed = sum(contributions[c].num_samples for c in result.contributors if c in contributions)
        missing = sorted(set(result.contributors) - set(contributions))
        if missing:
            return f"secure aggregation unmasked inputs of {missing}, which reported no sample count"
        if uniform and result.total_weight != len(result.contributors):
            return (
                f"{len(result.contributors)} clients each weighted 1 sum to weight {result.total_weight}:"
                " a client entered the sum with another weight, so the privacy accounting cannot hold"
            )
        if not uniform and claimed != result.total_weight:
            return (
                f"the clients claim {claimed} samples in total but the unmasked sum carries {result.total_weight}:"
                " a sample count was misreported, so the weighting cannot be trusted"
            )
        return None

    def _close(
        self,
        protocol: SecAggServerRound,
        result: SecAggResult,
        contributions: Mapping[str, Contribution],
        now: float,
    ) -> list[Event]:
        engine = self.lifecycle.engine
        global_w = self.lifecycle.global_weights
        reports = self._reports(protocol, result, contributions)
        if self.uniform:  # Σ Δ_k = mean · count: the aggregator divides by its own denominator
            count = float(result.total_weight)
            engine.submit_secure_sum(reports, {k: v * count for k, v in result.mean_delta.items()})
            return self.lifecycle.tick(now)
        means = {name: np.asarray(global_w[name], np.float64) + result.mean_delta[name] for name in global_w}
        partial = WeightedMeanAccumulator.from_partial_sums(
            global_w, means, float(result.total_weight), len(result.contributors)
        )
        engine.submit_merged(reports, partial)
        return self.lifecycle.tick(now)

    @staticmethod
    def _reports(
        protocol: SecAggServerRound, result: SecAggResult, contributions: Mapping[str, Contribution]
    ) -> list[UpdateReport]:
        return [
            UpdateReport(
                cid,
                protocol.round,
                contributions[cid].num_samples,
                dict(contributions[cid].metrics),
                protocol.masked_sha256(cid),
            )
            for cid in result.contributors
        ]

    def _abandon(self, failure: SecAggFailure) -> list[Event]:
        engine = self.lifecycle.engine
        for cid in failure.survivors:
            engine.reject_client(cid, failure.code, failure.reason)
        if not failure.survivors and engine.recorder is not None:  # nobody is left to name: the round's refusal
            engine.recorder.update_rejected(engine.current_round, None, failure.code, failure.reason)
        received = engine.received()
        return [RoundAbandoned(engine.abandon_round(), received)]
