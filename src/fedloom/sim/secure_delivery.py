"""Delivering a simulated round's trained updates through secure aggregation.

Training is unchanged (the executors, ``fit_one``, the same checks as an agent); what
changes is how the results reach the server. Every trained client runs the protocol's
:class:`~fedloom.algorithms.secagg.client.SecAggClient` in the driver process on its
delta ``local - global``, the server side is the lifecycle's
:class:`~fedloom.server.rounds.secure.SecureRounds`, and the round closes (or is
refused) from the unmasked sum alone. Seeded dropouts at each stage
(``rng_for(seed, "secagg-dropout", round, stage)``) make clients stop answering there,
as an agent that went offline would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedloom.algorithms.secagg.settings import STAGES, SecAggSettings
from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.server.rounds import SyncRounds
from fedloom.server.rounds.events import Event


def check_dropout(dropout: Mapping[str, float]) -> None:
    """Refuse unknown stages and probabilities outside [0, 1], naming them."""
    for stage, p in dropout.items():
        if stage not in STAGES:
            raise ConfigError(f"secagg dropout stage {stage!r} is unknown; stages are {', '.join(STAGES)}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"secagg dropout probability of stage {stage!r} must be in [0, 1], got {p}")


def delta(local: Weights, global_w: Weights) -> Weights:
    """``local - global`` per tensor: float64 for floating tensors, int64 (exact) for the others."""
    out: Weights = {}
    for name, ref in global_w.items():
        kind = np.float64 if ref.dtype.kind == "f" else np.int64
        out[name] = np.asarray(local[name]).astype(kind) - np.asarray(ref).astype(kind)
    return out


@dataclass(frozen=True)
class SecureDelivery:
    """Secure aggregation of every round of one simulation (settings, seeded dropouts)."""

    settings: SecAggSettings
    seed: int
    dropout: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_dropout(self.dropout)

    def dropouts(self, round: int, selected: Sequence[str]) -> dict[str, set[str]]:
        """Who stops answering at each stage of ``round`` (independent draws per stage)."""
        ids = sorted(selected)
        drawn: dict[str, set[str]] = {}
        for stage in STAGES:
            p = self.dropout.get(stage, 0.0)
            if p > 0:
                u = rng_for(self.seed, "secagg-dropout", round, stage).random(len(ids))
                drawn[stage] = {cid for cid, x in zip(ids, u, strict=True) if x < p}
        return drawn

    def deliver(self, lifecycle: SyncRounds, updates: Sequence[ClientUpdate], now: float) -> list[Event]:
        """Run the protocol over ``updates`` (the open round's trained clients) and close or refuse the round."""
        # imported here: the protocol needs the optional 'cryptography' (a ConfigError naming the
        # extra when missing), and a simulation without secure aggregation must not need it
        from fedloom.algorithms.secagg.local_round import LocalUpdate, run_protocol
        from fedloom.server.rounds.secure import Contribution, SecureRounds

        rounds = SecureRounds(lifecycle, self.settings)
        protocol = rounds.start()
        global_w = lifecycle.global_weights
        local = {u.client_id: LocalUpdate(delta(u.weights, global_w), u.num_samples) for u in updates}
        rng = rng_for(self.seed, "secagg-rounding", protocol.round)
        drops = self.dropouts(protocol.round, protocol.graph.ids)
        outcome = run_protocol(protocol, local, self.settings, self.seed, drops, rng)
        contributions = {u.client_id: Contribution(u.num_samples, dict(u.metrics)) for u in updates}
        absent = set(protocol.graph.ids) - set(local)  # dropped or failed before training: already recorded
        return rounds.finish(protocol, contributions, now, outcome.refusals, absent)
