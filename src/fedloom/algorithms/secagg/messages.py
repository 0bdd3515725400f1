"""The messages of one secure-aggregation round, as plain dataclasses with a JSON form.

Client → server: :class:`KeysMessage` (stage ADVERTISE), :class:`SharesMessage` (SHARE),
:class:`MaskedInput` (COLLECT), :class:`UnmaskMessage` (UNMASK). Server → client:
:class:`KeysRelay`, :class:`SharesRelay`, :class:`UnmaskRequest`. ``from_json`` checks
every field of what may be hostile input (types, sizes, lengths, ranges) and raises
:class:`~fedloom.algorithms.secagg.fields.SecAggMessageError` naming the field; whether
the ids and the round are the ones expected is checked by the party receiving them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from fedloom.algorithms.secagg import fields as f
from fedloom.algorithms.secagg.crypto import KEY_BYTES, NONCE_BYTES, TAG_BYTES
from fedloom.algorithms.secagg.shamir import SHARE_BYTES

#: a sealed pair of shares: nonce || AES-GCM(self-mask share || key share) || tag
SEALED_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES
#: the largest masked vector accepted (elements); 10M parameters fit several times
MAX_WORDS = 1 << 27


@dataclass(frozen=True)
class KeysMessage:
    """A client's two public keys: one to encrypt shares to it, one for pairwise masks."""

    round: int
    client_id: str
    cipher_public: bytes
    mask_public: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "client_id": self.client_id,
            "cipher_public": f.encode(self.cipher_public),
            "mask_public": f.encode(self.mask_public),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        o = f.require_object(obj, "keys", ("round", "client_id", "cipher_public", "mask_public"))
        return cls(
            f.round_number(o["round"]),
            f.client_id(o["client_id"], "client_id"),
            f.blob(o["cipher_public"], "cipher_public", KEY_BYTES),
            f.blob(o["mask_public"], "mask_public", KEY_BYTES),
        )


@dataclass(frozen=True)
class KeysRelay:
    """What the server forwards to one client: the keys its neighbours advertised."""

    round: int
    keys: tuple[KeysMessage, ...]

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        o = f.require_object(obj, "keys_relay", ("round", "keys"))
        if not isinstance(o["keys"], list) or len(o["keys"]) > f.MAX_PEERS:
            raise f.SecAggMessageError("keys", f"must be a list of at most {f.MAX_PEERS} key messages")
        return cls(f.round_number(o["round"]), tuple(KeysMessage.from_json(k) for k in o["keys"]))


def _sealed_map_json(shares: Mapping[str, bytes]) -> dict[str, str]:
    return {peer: f.encode(sealed) for peer, sealed in sorted(shares.items())}


@dataclass(frozen=True)
class SharesMessage:
    """A client's sealed shares, one per neighbour (receiver id -> ciphertext)."""

    round: int
    sender: str
    shares: Mapping[str, bytes]

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "sender": self.sender, "shares": _sealed_map_json(self.shares)}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        o = f.require_object(obj, "shares_message", ("round", "sender", "shares"))
        return cls(
            f.round_number(o["round"]),
            f.client_id(o["sender"], "sender"),
            f.blob_map(o["shares"], "shares", SEALED_BYTES),
        )


@dataclass(frozen=True)
class SharesRelay:
    """What the server forwards to one client: the ciphertexts addressed to it (sender id -> ciphertext)."""

    round: int
    receiver: str
    shares: Mapping[str, bytes]

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "receiver": self.receiver, "shares": _sealed_map_json(self.shares)}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        o = f.require_object(obj, "shares_relay", ("round", "receiver", "shares"))
        return cls(
            f.round_number(o["round"]),
            f.client_id(o["receiver"], "receiver"),
            f.blob_map(o["shares"], "shares", SEALED_BYTES),
        )


@dataclass(frozen=True)
class MaskedInput:
    """A client's masked vector: uint64 words, uniform-looking to anyone without the masks."""

    round: int
    client_id: str
    words: np.ndarray

    def to_json(self) -> dict[str, Any]:
        raw = np.ascontiguousarray(self.words, dtype="<u8").tobytes()
        return {"round": self.round, "client_id": self.client_id, "words": f.encode(raw)}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        o = f.require_object(obj, "masked_input", ("round", "client_id", "words"))
        raw = f.blob(o["words"], "words", max_size=8 * MAX_WORDS)
        if len(raw) % 8 or not raw:
            raise f.SecAggMessageError("words", f"must decode to a whole number of uint64 words, got {len(raw)} bytes")
        words = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        return cls(f.round_number(o["round"]), f.client_id(o["client_id"], "client_id"), words)


@dataclass(frozen=True)
class UnmaskRequest:
    """The server's question after COLLECT: who sent a masked input, and who dropped after sharing."""

    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "survivors": list(self.survivors), "dropped": list(self.dropped)}

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        o = f.require_object(obj, "unmask_request", ("round", "survivors", "dropped"))
        return cls(
            f.round_number(o["round"]), f.id_list(o["survivors"], "survivors"), f.id_list(o["dropped"], "dropped")
        )


@dataclass(frozen=True)
class UnmaskMessage:
    """A client's answer: self-mask shares of surviving neighbours, key shares of dropped ones."""

    round: int
    client_id: str
    self_mask_shares: Mapping[str, bytes]
    key_shares: Mapping[str, bytes]

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "client_id": self.client_id,
            "self_mask_shares": {k: f.encode(v) for k, v in sorted(self.self_mask_shares.items())},
            "key_shares": {k: f.encode(v) for k, v in sorted(self.key_shares.items())},
        }

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        o = f.require_object(obj, "unmask_message", ("round", "client_id", "self_mask_shares", "key_shares"))
        return cls(
            f.round_number(o["round"]),
            f.client_id(o["client_id"], "client_id"),
            f.blob_map(o["self_mask_shares"], "self_mask_shares", SHARE_BYTES),
            f.blob_map(o["key_shares"], "key_shares", SHARE_BYTES),
        )
