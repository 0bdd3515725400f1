"""A client's key pairs for one round, and what two clients derive from them.

Each client makes two X25519 key pairs per round: the *cipher* pair, whose agreement with
a neighbour gives the AES-GCM key of the shares they send each other through the server,
and the *mask* pair, whose agreement gives the seed of their pairwise mask. Keys are
fresh every round, so nothing rebuilt after a dropout in one round helps in another.
Derivations are bound to the round and to the ordered pair of ids (HKDF ``info``), and a
ciphertext's associated data names (round, sender, receiver), so the server can neither
replay a share into another round nor hand one client's ciphertext to another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedloom.algorithms.secagg import crypto


def _pair_info(purpose: str, round: int, a: str, b: str) -> bytes:
    low, high = sorted((a, b))
    return f"fedloom-secagg/v1/{purpose}|{round}|{len(low)}:{low}|{len(high)}:{high}".encode()


def pairwise_seed(mask_private: crypto.X25519PrivateKey, peer_public: bytes, round: int, me: str, peer: str) -> bytes:
    """The seed both ``me`` and ``peer`` compute for their pairwise mask in ``round``."""
    return crypto.agree(mask_private, peer_public, _pair_info("mask", round, me, peer))


def share_key(cipher_private: crypto.X25519PrivateKey, peer_public: bytes, round: int, me: str, peer: str) -> bytes:
    """The AES-GCM key of the shares ``me`` and ``peer`` exchange in ``round``."""
    return crypto.agree(cipher_private, peer_public, _pair_info("share", round, me, peer))


def associated_data(round: int, sender: str, receiver: str) -> bytes:
    """What a sealed share is bound to: its round and its direction."""
    return f"fedloom-secagg/v1/sealed|{round}|{len(sender)}:{sender}|{len(receiver)}:{receiver}".encode()


@dataclass
class ClientKeys:
    """One client's key pairs for one round (private keys never leave the client unshared)."""

    cipher: crypto.X25519PrivateKey = field(default_factory=crypto.new_private_key)
    mask: crypto.X25519PrivateKey = field(default_factory=crypto.new_private_key)

    @property
    def cipher_public(self) -> bytes:
        return crypto.public_bytes(self.cipher)

    @property
    def mask_public(self) -> bytes:
        return crypto.public_bytes(self.mask)
