"""Shamir's t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree t - 1; share x is the
polynomial at x. Any t shares rebuild it (Lagrange interpolation at 0) and any t - 1 say
nothing about it, which is what lets a round survive dropouts without letting fewer than
t colluding neighbours learn a client's masks. The Mersenne prime 2^521 - 1 is larger than
any 32-byte secret, so a secret is one field element.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

from fedloom.core.errors import ValidationError

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # 521 bits
SECRET_BYTES = 32


def split(secret: bytes, threshold: int, points: Iterable[int]) -> dict[int, int]:
    """Shares of ``secret`` at each of ``points`` (distinct integers >= 1); any ``threshold`` rebuild it."""
    xs = list(points)
    if len(secret) != SECRET_BYTES:
        raise ValidationError(f"a shared secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs) or any(x < 1 or x >= PRIME for x in xs):
        raise ValidationError("share points must be distinct integers in [1, p)")
    if not 1 <= threshold <= len(xs):
        raise ValidationError(f"threshold {threshold} must be in [1, {len(xs)}] (the number of shares)")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x) for x in xs}


def _evaluate(coefficients: list[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % PRIME
    return value


def combine(shares: Mapping[int, int], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (point -> value); fewer are refused."""
    if len(shares) < threshold:
        raise ValidationError(f"{len(shares)} share(s) cannot rebuild a secret that needs {threshold}")
    chosen = sorted(shares.items())[:threshold]
    secret = 0
    for i, (x_i, y_i) in enumerate(chosen):
        numerator, denominator = 1, 1
        for j, (x_j, _) in enumerate(chosen):
            if i != j:
                numerator = numerator * (-x_j) % PRIME
                denominator = denominator * (x_i - x_j) % PRIME
        secret = (secret + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise ValidationError("the shares do not belong to one secret (the rebuilt value is out of range)")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(raw: bytes) -> int:
    """A share value from its fixed-width bytes; refuses other lengths and values outside the field."""
    if len(raw) != SHARE_BYTES:
        raise ValidationError(f"a share must be {SHARE_BYTES} bytes, got {len(raw)}")
    value = int.from_bytes(raw, "big")
    if value >= PRIME:
        raise ValidationError("a share value must be below the field's prime")
    return value
