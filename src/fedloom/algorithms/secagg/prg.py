"""The masks' pseudo-random generator: a 32-byte seed expanded into uint64 words.

A mask must look uniform on Z_{2^64} to anyone without the seed, and two parties holding
the same seed must expand it to the same words; a ChaCha20 keystream under a key derived
(HKDF) from the seed and the purpose gives both. The purpose (round, what the mask is
for) separates domains, so a seed reused by mistake in another round or for another mask
still gives unrelated words.
"""

from __future__ import annotations

import numpy as np

from fedloom.algorithms.secagg import crypto
from fedloom.core.errors import ValidationError

SEED_BYTES = 32


def mask_words(seed: bytes, length: int, purpose: str) -> np.ndarray:
    """``length`` uint64 words expanded from ``seed`` for ``purpose`` (deterministic)."""
    if len(seed) != SEED_BYTES:
        raise ValidationError(f"a mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if length < 0:
        raise ValidationError(f"mask length must be >= 0, got {length}")
    key = crypto.derive(seed, b"fedloom-secagg/v1/prg|" + purpose.encode())
    stream = crypto.keystream(key, 8 * length)
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=True)
