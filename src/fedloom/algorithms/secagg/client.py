"""One client's side of one secure-aggregation round (SecAgg+ when the graph is sparse).

The client never sends its update in the clear: it advertises two public keys, sends each
neighbour (through the server, sealed) a share of its self-mask seed b and of its mask
private key, sends its update masked by PRG(b) and pairwise masks, and finally answers
which shares it holds — b-shares of neighbours that sent a masked input, key shares of
neighbours that dropped after sharing. It refuses to reveal both shares of one
neighbour (that would unmask the neighbour's vector), to answer for fewer survivors than
the threshold, and any message from another round, from a non-neighbour, or sealed for
someone else. Pure and in memory: a deployed agent will call the same methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from fedloom.algorithms.secagg import crypto, ring, shamir
from fedloom.algorithms.secagg.codec import RingLayout
from fedloom.algorithms.secagg.fields import SecAggMessageError
from fedloom.algorithms.secagg.graph import CommunicationGraph
from fedloom.algorithms.secagg.keys import ClientKeys, associated_data, share_key
from fedloom.algorithms.secagg.masking import pairwise_masks, self_mask
from fedloom.algorithms.secagg.messages import (
    KeysMessage,
    KeysRelay,
    MaskedInput,
    SharesMessage,
    SharesRelay,
    UnmaskMessage,
    UnmaskRequest,
)
from fedloom.algorithms.secagg.prg import SEED_BYTES
from fedloom.algorithms.secagg.settings import SecAggSettings
from fedloom.core.errors import ConfigError

Revealed = Literal["self_mask", "key"]


class SecAggClient:
    """The client state machine of one round (advertise → share → masked input → unmask)."""

    def __init__(
        self,
        client_id: str,
        round: int,
        selected: Sequence[str],
        settings: SecAggSettings,
        seed: int,
        layout: RingLayout,
    ) -> None:
        self.client_id, self.round, self.layout = client_id, round, layout
        self.graph = CommunicationGraph(selected, settings.degree(len(selected)), seed, round)
        if client_id not in self.graph:
            raise ConfigError(f"client {client_id!r} is not among the round's selected clients")
        self.threshold = settings.threshold_for(self.graph.degree)
        self._neighbours = self.graph.neighbours(client_id)
        self._keys = ClientKeys()
        self._self_seed = crypto.random_bytes(SEED_BYTES)
        self._peer_keys: dict[str, KeysMessage] = {}
        self._held: dict[str, tuple[int, int]] = {}  # sender -> (self-mask share, key share)
        self._revealed: dict[str, Revealed] = {}
        self._stage = "advertise"

    def _expect(self, stage: str, round: int) -> None:
        if round != self.round:
            raise SecAggMessageError("round", f"is {round} but this client is in round {self.round}")
        if self._stage != stage:
            raise SecAggMessageError("stage", f"client {self.client_id!r} is at stage {self._stage!r}, not {stage!r}")

    def advertise_keys(self) -> KeysMessage:
        """Stage ADVERTISE: the public keys of this round's two key pairs."""
        self._expect("advertise", self.round)
        self._stage = "share"
        return KeysMessage(self.round, self.client_id, self._keys.cipher_public, self._keys.mask_public)

    def share_keys(self, relay: KeysRelay) -> SharesMessage:
        """Stage SHARE: a sealed (b-share, key-share) pair for every neighbour that advertised keys."""
        self._expect("share", relay.round)
        peers: dict[str, KeysMessage] = {}
        for keys in relay.keys:
            if keys.round != self.round:
                raise SecAggMessageError("keys.round", f"key of {keys.client_id!r} is for round {keys.round}")
            if keys.client_id not in self._neighbours or keys.client_id in peers:
                raise SecAggMessageError("keys.client_id", f"{keys.client_id!r} is not a new neighbour of this client")
            peers[keys.client_id] = keys
        self._require_enough(len(peers), "neighbours advertised keys")
        points = {cid: self.graph.point(cid) for cid in peers}
        b_shares = shamir.split(self._self_seed, self.threshold, points.values())
        k_shares = shamir.split(crypto.private_bytes(self._keys.mask), self.threshold, points.values())
        sealed = {}
        for cid, keys in peers.items():
            plain = shamir.share_to_bytes(b_shares[points[cid]]) + shamir.share_to_bytes(k_shares[points[cid]])
            key = share_key(self._keys.cipher, keys.cipher_public, self.round, self.client_id, cid)
            sealed[cid] = crypto.seal(key, plain, associated_data(self.round, self.client_id, cid))
        self._peer_keys = peers
        self._stage = "collect"
        return SharesMessage(self.round, self.client_id, sealed)

    def _require_enough(self, count: int, what: str) -> None:
        if count < self.threshold:
            self._stage = "aborted"
            raise SecAggMessageError(
                "survivors", f"only {count} {what}, below the threshold {self.threshold}: this client stops here"
            )

    def masked_input(
        self,
        delta: Mapping[str, np.ndarray],
        num_samples: int,
        relay: SharesRelay,
        rng: np.random.Generator | None = None,
    ) -> MaskedInput:
        """Stage COLLECT: open the shares addressed to this client, then mask the encoded update."""
        self._expect("collect", relay.round)
        if relay.receiver != self.client_id:
            raise SecAggMessageError("receiver", f"relay is for {relay.receiver!r}, not {self.client_id!r}")
        held = {sender: self._open(sender, sealed) for sender, sealed in relay.shares.items()}
        self._require_enough(len(held), "neighbours sent shares")
        words = self.layout.encode(delta, num_samples, rng)
        length = self.layout.length
        masks = pairwise_masks(
            self.client_id, self._keys.mask, {s: self._peer_keys[s].mask_public for s in held}, self.round, length
        )
        masked = ring.add(ring.add(words, self_mask(self._self_seed, self.round, length)), masks)
        self._held = held
        self._stage = "unmask"
        return MaskedInput(self.round, self.client_id, masked)

    def _open(self, sender: str, sealed: bytes) -> tuple[int, int]:
        peer = self._peer_keys.get(sender)
        if peer is None:
            raise SecAggMessageError("shares", f"{sender!r} is not a neighbour that advertised keys to this client")
        key = share_key(self._keys.cipher, peer.cipher_public, self.round, self.client_id, sender)
        try:
            plain = crypto.open_sealed(key, sealed, associated_data(self.round, sender, self.client_id))
        except crypto.InvalidTag:
            raise SecAggMessageError(
                f"shares[{sender!r}]", "does not open: it was changed, or sealed for another round or client"
            ) from None
        width = shamir.SHARE_BYTES
        return shamir.share_from_bytes(plain[:width]), shamir.share_from_bytes(plain[width:])

    def unmask(self, request: UnmaskRequest) -> UnmaskMessage:
        """Stage UNMASK: b-shares of surviving neighbours, key shares of neighbours that dropped."""
        self._expect("unmask", request.round)
        survivors, dropped = set(request.survivors), set(request.dropped)
        if self.client_id not in survivors:
            raise SecAggMessageError("survivors", f"does not name {self.client_id!r}, which sent its masked input")
        if survivors & dropped:
            raise SecAggMessageError("dropped", f"names survivors too: {sorted(survivors & dropped)}")
        unknown = sorted((survivors | dropped) - set(self.graph.ids))
        if unknown:
            raise SecAggMessageError("survivors", f"names clients not selected for the round: {unknown}")
        if len(survivors) < self.threshold:
            raise SecAggMessageError("survivors", f"{len(survivors)} survivors is below the threshold {self.threshold}")
        wanted: dict[str, Revealed] = {s: "self_mask" for s in survivors if s in self._held}
        wanted.update({d: "key" for d in dropped if d in self._held})
        conflicts = sorted(c for c, kind in wanted.items() if self._revealed.get(c, kind) != kind)
        if conflicts:
            raise SecAggMessageError(
                "dropped", f"asks for both shares of {conflicts}: revealing both would unmask their update"
            )
        self._revealed.update(wanted)
        b = {c: shamir.share_to_bytes(self._held[c][0]) for c, kind in wanted.items() if kind == "self_mask"}
        k = {c: shamir.share_to_bytes(self._held[c][1]) for c, kind in wanted.items() if kind == "key"}
        return UnmaskMessage(self.round, self.client_id, b, k)
