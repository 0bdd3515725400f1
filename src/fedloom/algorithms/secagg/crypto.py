"""The few cryptographic primitives secure aggregation uses, all from ``cryptography``.

Kept in one module so the optional dependency is imported in one place: without the
``secagg`` extra, importing this package fails with a ConfigError that says how to install
it, instead of an ImportError deep inside a round.

- X25519 key agreement, HKDF-SHA256 to turn a shared secret into a key for one purpose;
- AES-256-GCM with associated data, so a ciphertext only opens for the (round, sender,
  receiver) it was made for;
- a ChaCha20 keystream as the pseudo-random generator of masks.
"""

from __future__ import annotations

import os

from fedloom.core.errors import ConfigError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError:  # pragma: no cover - exercised by a test that hides the module
    raise ConfigError("secure aggregation needs the 'cryptography' package: pip install 'fedloom[secagg]'") from None

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

__all__ = ["InvalidTag", "X25519PrivateKey", "X25519PublicKey"]


def new_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key (from the OS's CSPRNG)."""
    return X25519PrivateKey.generate()


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key`` (what is secret-shared)."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def private_from_bytes(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key``'s public key (what is advertised)."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key only ``private``'s owner and the owner of ``peer_public`` can compute, for ``info``."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return derive(shared, info)


def derive(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of ``secret`` for the purpose ``info`` (domain separation)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-GCM encryption: random nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of :func:`seal`'s output; raises ``InvalidTag`` if anything was changed."""
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)


def keystream(key: bytes, num_bytes: int) -> bytes:
    """``num_bytes`` of ChaCha20 keystream under ``key`` (a fixed nonce: each key is used once)."""
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return encryptor.update(bytes(num_bytes))


def random_bytes(count: int) -> bytes:
    return os.urandom(count)
