"""The masks a client adds to its vector, computed the same way by the client and the server.

Client i adds its self mask PRG(b_i) and, for every neighbour j that shared keys with it,
+PRG(s_ij) when i < j and -PRG(s_ij) when i > j. Over the clients that all sent masked
inputs the pairwise masks cancel; for a client d that dropped after sharing, the server
rebuilds d's mask key from shares and adds what d *would* have added against the
survivors, which cancels what they added against d. The self mask is removed from the
rebuilt b_i of each survivor, so that a late masked input of a client thought dropped
reveals nothing (it is still covered by b_i).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.algorithms.secagg import crypto, ring
from fedloom.algorithms.secagg.keys import pairwise_seed
from fedloom.algorithms.secagg.prg import mask_words


def self_mask(seed: bytes, round: int, length: int) -> np.ndarray:
    """PRG(b_i) for ``round``."""
    return mask_words(seed, length, f"self|{round}")


def pairwise_masks(
    me: str, mask_private: crypto.X25519PrivateKey, peers: Mapping[str, bytes], round: int, length: int
) -> np.ndarray:
    """Σ_j ±PRG(s_ij) of ``me`` against ``peers`` (id -> mask public key), signed by id order."""
    total = np.zeros(length, np.uint64)
    for peer in sorted(peers):
        seed = pairwise_seed(mask_private, peers[peer], round, me, peer)
        words = mask_words(seed, length, f"pair|{round}")
        total = ring.add(total, words) if me < peer else ring.subtract(total, words)
    return total
