"""The server's side of one secure-aggregation round: a stage machine that relays and unmasks.

    ADVERTISE --close--> SHARE --close--> COLLECT --close--> UNMASK --close--> DONE
         (any close with too few clients left, or a secret that cannot be rebuilt) --> FAILED

Each stage takes messages only from clients still in the protocol (those that answered
the stage before), once each; a client that does not answer a stage has dropped out and
is recorded with the stage. The server only relays what it cannot read (public keys,
sealed shares) and, at the end, rebuilds from shares exactly the masks needed to cancel
everything but the sum: the self masks of the clients that sent a masked input and the
pairwise masks of those that dropped after sharing. Below the threshold the round ends
in a :class:`SecAggFailure` naming the stage, the survivors and the threshold — never in
a wrong sum.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.algorithms.secagg import crypto, ring, shamir
from fedloom.algorithms.secagg.codec import RingLayout
from fedloom.algorithms.secagg.fields import SecAggMessageError
from fedloom.algorithms.secagg.graph import CommunicationGraph
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
from fedloom.algorithms.secagg.settings import SecAggSettings
from fedloom.core.errors import ValidationError
from fedloom.core.weights import Weights

BELOW_THRESHOLD = "secagg_below_threshold"


class Stage(enum.Enum):
    ADVERTISE = "advertise"
    SHARE = "share"
    COLLECT = "collect"
    UNMASK = "unmask"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class SecAggResult:
    """The unmasked aggregate: the weighted-mean delta (float64), Σ n_k, and who contributed."""

    mean_delta: Weights
    total_weight: int
    contributors: tuple[str, ...]


@dataclass(frozen=True)
class SecAggFailure:
    """Why a round gave no aggregate; ``code`` is the recorded rejection code."""

    code: str
    stage: str
    survivors: tuple[str, ...]
    threshold: int
    reason: str


class SecAggServerRound:
    """The server's state for one round (see the module docstring)."""

    def __init__(
        self, round: int, selected: Sequence[str], settings: SecAggSettings, seed: int, layout: RingLayout
    ) -> None:
        self.round, self.layout = round, layout
        self.graph = CommunicationGraph(selected, settings.degree(len(selected)), seed, round)
        self.threshold = settings.threshold_for(self.graph.degree)
        self.stage = Stage.ADVERTISE
        self.active: frozenset[str] = frozenset(self.graph.ids)
        self.dropped: dict[str, str] = {}  # client -> the stage it did not answer
        self.failure: SecAggFailure | None = None
        self._keys: dict[str, KeysMessage] = {}
        self._shares: dict[str, SharesMessage] = {}
        self._masked: dict[str, str] = {}  # client -> sha256 of its masked vector (the vectors are summed on arrival)
        self._sum = np.zeros(layout.length, np.uint64)
        self._unmask: dict[str, UnmaskMessage] = {}
        self._after_share: frozenset[str] = frozenset()
        if self.threshold > self.graph.degree:
            self._fail(f"each client has {self.graph.degree} neighbours, fewer than the threshold {self.threshold}")

    # -- receiving -----------------------------------------------------------------
    def _admit(self, stage: Stage, round: int, client_id: str, seen: Mapping[str, object]) -> None:
        if round != self.round:
            raise SecAggMessageError("round", f"is {round} but round {self.round} is being aggregated")
        if self.stage is not stage:
            raise SecAggMessageError("stage", f"the round is at stage {self.stage.value!r}, not {stage.value!r}")
        if client_id not in self.graph:
            raise SecAggMessageError("client_id", f"{client_id!r} was not selected for round {self.round}")
        if client_id not in self.active:
            raise SecAggMessageError("client_id", f"{client_id!r} dropped out at stage {self.dropped[client_id]!r}")
        if client_id in seen:
            raise SecAggMessageError("client_id", f"{client_id!r} already answered stage {stage.value!r}")

    def receive_keys(self, message: KeysMessage) -> None:
        self._admit(Stage.ADVERTISE, message.round, message.client_id, self._keys)
        taken = {k.cipher_public for k in self._keys.values()} | {k.mask_public for k in self._keys.values()}
        fresh = {message.cipher_public, message.mask_public}
        if len(fresh) != 2 or fresh & taken:
            raise SecAggMessageError("cipher_public", "repeats a key already advertised in this round")
        self._keys[message.client_id] = message

    def receive_shares(self, message: SharesMessage) -> None:
        self._admit(Stage.SHARE, message.round, message.sender, self._shares)
        expected = self.graph.neighbours(message.sender) & set(self._keys)
        if set(message.shares) != expected:
            raise SecAggMessageError("shares", f"must be addressed to exactly the neighbours {sorted(expected)}")
        self._shares[message.sender] = message

    def receive_masked(self, message: MaskedInput) -> None:
        self._admit(Stage.COLLECT, message.round, message.client_id, self._masked)
        if message.words.shape != (self.layout.length,):
            raise SecAggMessageError("words", f"must hold {self.layout.length} words, got {message.words.size}")
        self._sum = ring.add(self._sum, message.words)
        self._masked[message.client_id] = hashlib.sha256(
            np.ascontiguousarray(message.words, "<u8").tobytes()
        ).hexdigest()

    def receive_unmask(self, message: UnmaskMessage) -> None:
        self._admit(Stage.UNMASK, message.round, message.client_id, self._unmask)
        survivors, gone = set(self._masked), self._after_share - set(self._masked)
        for field, owners, allowed in (
            ("self_mask_shares", message.self_mask_shares, survivors),
            ("key_shares", message.key_shares, gone),
        ):
            for owner in owners:
                sent = self._shares.get(owner)
                if owner not in allowed or sent is None or message.client_id not in sent.shares:
                    raise SecAggMessageError(field, f"holds a share of {owner!r} that was not asked for")
        self._unmask[message.client_id] = message

    def masked_sha256(self, client_id: str) -> str:
        """The SHA-256 of the masked vector ``client_id`` sent (little-endian words): what a record may keep.

        The server folds each masked vector into one running sum as it arrives, so a round holds
        O(model) memory whatever the number of clients."""
        return self._masked[client_id]

    # -- relaying ------------------------------------------------------------------
    def keys_for(self, client_id: str) -> KeysRelay:
        """The advertised keys of ``client_id``'s neighbours (stage SHARE)."""
        near = self.graph.neighbours(client_id)
        return KeysRelay(self.round, tuple(self._keys[c] for c in sorted(near) if c in self._keys))

    def shares_for(self, client_id: str) -> SharesRelay:
        """The sealed shares addressed to ``client_id`` by clients that completed SHARE (stage COLLECT)."""
        relayed = {s: m.shares[client_id] for s, m in sorted(self._shares.items()) if client_id in m.shares}
        return SharesRelay(self.round, client_id, relayed)

    def unmask_request(self) -> UnmaskRequest:
        """Who sent a masked input and who dropped after sharing (stage UNMASK)."""
        survivors = tuple(sorted(self._masked))
        return UnmaskRequest(self.round, survivors, tuple(sorted(self._after_share - set(self._masked))))

    # -- closing stages --------------------------------------------------------------
    def close_stage(self) -> Stage:
        """End the current stage: who did not answer has dropped out; refuse if too few are left."""
        stages: dict[Stage, Mapping[str, object]] = {
            Stage.ADVERTISE: self._keys,
            Stage.SHARE: self._shares,
            Stage.COLLECT: self._masked,
            Stage.UNMASK: self._unmask,
        }
        answered = stages.get(self.stage)
        if answered is None:
            raise ValidationError(f"round {self.round} is {self.stage.value}: no stage is open")
        for cid in self.active - set(answered):
            self.dropped[cid] = self.stage.value
        self.active = frozenset(answered)
        if len(self.active) < self.threshold:
            return self._fail(f"{len(self.active)} client(s) answered, fewer than the threshold {self.threshold}")
        order = [Stage.ADVERTISE, Stage.SHARE, Stage.COLLECT, Stage.UNMASK, Stage.DONE]
        if self.stage is Stage.SHARE:
            self._after_share = frozenset(self._shares)
        self.stage = order[order.index(self.stage) + 1]
        return self.stage

    def _fail(self, why: str) -> Stage:
        stage = self.stage.value
        self.failure = SecAggFailure(
            BELOW_THRESHOLD,
            stage,
            tuple(sorted(self.active)),
            self.threshold,
            f"secure aggregation of round {self.round} refused at stage {stage!r}: {why};"
            f" survivors {sorted(self.active)}, threshold {self.threshold}",
        )
        self.stage = Stage.FAILED
        return self.stage

    # -- the result ------------------------------------------------------------------
    def aggregate(self) -> SecAggResult | SecAggFailure:
        """The unmasked weighted-mean delta once UNMASK is closed, or why there is none."""
        if self.failure is not None:
            return self.failure
        if self.stage is not Stage.DONE:
            raise ValidationError(f"round {self.round} is at stage {self.stage.value!r}; close UNMASK first")
        try:
            mean_delta, weight = self.layout.decode(self._unmasked_sum())
        except (_UnrecoverableError, ValidationError) as exc:
            # a wrong share that no spare share exposed still scrambles the n_k word: refused, never decoded
            self.stage = Stage.UNMASK  # the failure is named after the stage whose answers fell short
            self._fail(str(exc))
            assert self.failure is not None
            return self.failure
        return SecAggResult(mean_delta, weight, tuple(sorted(self._masked)))

    def _unmasked_sum(self) -> np.ndarray:
        length = self.layout.length
        total = self._sum.copy()
        for owner in sorted(self._masked):
            seed = self._rebuild(owner, "self_mask_shares")
            total = ring.subtract(total, self_mask(seed, self.round, length))
        for owner in sorted(self._after_share - set(self._masked)):
            private = crypto.private_from_bytes(self._rebuild(owner, "key_shares"))
            if crypto.public_bytes(private) != self._keys[owner].mask_public:
                raise _UnrecoverableError(f"the rebuilt mask key of {owner!r} does not match the key it advertised")
            peers = {j: self._keys[j].mask_public for j in self._masked if j in self._shares[owner].shares}
            total = ring.add(total, pairwise_masks(owner, private, peers, self.round, length))
        return total

    def _rebuild(self, owner: str, kind: str) -> bytes:
        """``owner``'s secret from the answering holders' shares (two subsets must agree when shares are spare)."""
        shares: dict[int, int] = {}
        for holder, message in self._unmask.items():
            held = message.self_mask_shares if kind == "self_mask_shares" else message.key_shares
            if owner in held:
                shares[self.graph.point(holder)] = shamir.share_from_bytes(held[owner])
        if len(shares) < self.threshold:
            raise _UnrecoverableError(
                f"only {len(shares)} share(s) of {owner!r}'s {kind.replace('_shares', '')} arrived,"
                f" threshold {self.threshold}"
            )
        try:
            secret = shamir.combine(shares, self.threshold)
            points = sorted(shares)
            if len(points) > self.threshold:
                spare = {x: shares[x] for x in points[-self.threshold :]}
                if shamir.combine(spare, self.threshold) != secret:
                    raise _UnrecoverableError(f"the shares of {owner!r} disagree: some holder sent a wrong share")
        except ValidationError as exc:
            raise _UnrecoverableError(f"the shares of {owner!r} do not rebuild a secret: {exc}") from None
        return secret


class _UnrecoverableError(Exception):
    """A needed secret cannot be rebuilt (too few or inconsistent shares)."""
