"""One whole secure-aggregation round in memory: every client's and the server's code, in order.

Simulation, tests and the benchmark run a round through here; clients that drop out at a
stage simply stop answering from that stage on, exactly as an agent that went offline. A
client that refuses a stage (too few neighbours left) is treated as dropped there too,
and its refusal is kept so it can be recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedloom.algorithms.secagg.client import SecAggClient
from fedloom.algorithms.secagg.codec import RingLayout
from fedloom.algorithms.secagg.fields import SecAggMessageError
from fedloom.algorithms.secagg.server import SecAggFailure, SecAggResult, SecAggServerRound, Stage
from fedloom.algorithms.secagg.settings import STAGES, SecAggSettings


@dataclass(frozen=True)
class LocalUpdate:
    """What one trained client brings to the round: its delta and sample count."""

    delta: Mapping[str, np.ndarray]
    num_samples: int


@dataclass
class LocalRoundOutcome:
    """The server's result, the server object (its view and dropouts), and the clients' refusals."""

    result: SecAggResult | SecAggFailure
    server: SecAggServerRound
    refusals: dict[str, str] = field(default_factory=dict)


@dataclass
class _Round:
    server: SecAggServerRound
    clients: dict[str, SecAggClient]
    refusals: dict[str, str]

    def step(self, stage: str, gone: set[str], act: Callable[[str, SecAggClient], None]) -> bool:
        """Let every client still in (and not dropping at ``stage``) act, then close the stage."""
        for cid in sorted(self.server.active - gone):
            try:
                act(cid, self.clients[cid])
            except SecAggMessageError as exc:
                self.refusals[cid] = f"{stage}: {exc}"
        return self.server.close_stage() is not Stage.FAILED


def run_local_round(
    round: int,
    updates: Mapping[str, LocalUpdate],
    settings: SecAggSettings,
    seed: int,
    layout: RingLayout,
    dropouts: Mapping[str, set[str]] | None = None,
    rng: np.random.Generator | None = None,
) -> LocalRoundOutcome:
    """Run the four stages over ``updates``' clients (all selected); ``dropouts[stage]`` stop there."""
    server = SecAggServerRound(round, sorted(updates), settings, seed, layout)
    return run_protocol(server, updates, settings, seed, dropouts, rng)


def run_protocol(
    server: SecAggServerRound,
    updates: Mapping[str, LocalUpdate],
    settings: SecAggSettings,
    seed: int,
    dropouts: Mapping[str, set[str]] | None = None,
    rng: np.random.Generator | None = None,
) -> LocalRoundOutcome:
    """Run the four stages of ``server``'s round; selected clients without an update never advertise."""
    if server.failure is not None:
        return LocalRoundOutcome(server.failure, server)
    selected: Sequence[str] = server.graph.ids
    clients = {cid: SecAggClient(cid, server.round, selected, settings, seed, server.layout) for cid in updates}
    state = _Round(server, clients, {})
    drops = dropouts or {}
    gone: set[str] = set(selected) - set(updates)
    rounding = rng if settings.stochastic_rounding else None

    def masked(cid: str, client: SecAggClient) -> None:
        update = updates[cid]
        server.receive_masked(client.masked_input(update.delta, update.num_samples, server.shares_for(cid), rounding))

    actions: dict[str, Callable[[str, SecAggClient], None]] = {
        "advertise": lambda cid, client: server.receive_keys(client.advertise_keys()),
        "share": lambda cid, client: server.receive_shares(client.share_keys(server.keys_for(cid))),
        "collect": masked,
        "unmask": lambda cid, client: server.receive_unmask(client.unmask(server.unmask_request())),
    }
    for stage in STAGES:
        gone |= set(drops.get(stage, set()))
        if not state.step(stage, gone, actions[stage]):
            break
    return LocalRoundOutcome(server.aggregate(), server, state.refusals)
