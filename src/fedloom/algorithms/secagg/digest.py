"""The content hash of a masked input, the one record a secure round keeps of each client's upload.

The aggregator stores it as the client's local-model hash (no blob: the words are noise
on their own) and the lineage link lists it; the agent computes the same hash of what it
sent, so it can check that the round's global model names its masked input.
"""

from __future__ import annotations

import hashlib

import numpy as np


def masked_words_sha256(words: np.ndarray) -> str:
    """SHA-256 of the masked words as little-endian uint64, as they travel."""
    return hashlib.sha256(np.ascontiguousarray(words, dtype="<u8").tobytes()).hexdigest()
