import struct

import numpy as np
import pytest

from fedloom.core import (
    IntegrityError,
    PayloadTooLargeError,
    SerializationError,
    ValidationError,
    content_hash,
    from_bytes,
    to_bytes,
    weights_equal,
)


def sample_weights():
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "conv.bias": np.zeros(4, np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "mask": np.array([True, False]),
        "half": rng.normal(size=(3,)).astype(np.float16),
    }


def test_round_trip_is_exact_and_keeps_header():
    w = sample_weights()
    data = to_bytes(w, round=5, client_id="site-a", num_samples=123, extra={"note": "hi"})
    back, header = from_bytes(data)
    assert weights_equal(w, back)
    assert header.round == 5
    assert header.client_id == "site-a"
    assert header.num_samples == 123
    assert header.extra == {"note": "hi"}
    assert header.sha256 == content_hash(w)


def test_hash_is_order_independent_and_content_sensitive():
    w = sample_weights()
    reordered = dict(reversed(list(w.items())))
    assert content_hash(w) == content_hash(reordered)
    changed = dict(w)
    changed["conv.bias"] = np.array([0, 0, 0, 1e-7], np.float32)
    assert content_hash(changed) != content_hash(w)
    same_bytes_other_dtype = {"x": np.zeros(4, np.int32)}
    assert content_hash(same_bytes_other_dtype) != content_hash({"x": np.zeros(4, np.float32)})


def test_tampered_tensor_bytes_fail_integrity_check():
    data = bytearray(to_bytes({"w": np.arange(16, dtype=np.float32)}))
    data[-1] ^= 0x01
    with pytest.raises(IntegrityError, match="hash mismatch"):
        from_bytes(bytes(data))


def test_oversized_payload_is_refused_before_parsing():
    data = to_bytes({"w": np.zeros(1000, np.float32)})
    with pytest.raises(PayloadTooLargeError, match="over the limit of 100 bytes"):
        from_bytes(data, max_bytes=100)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"short", b"\xff" * 64, struct.pack("<Q", 10**9) + b"{}", struct.pack("<Q", 2) + b"{}"],
)
def test_garbage_is_a_serialization_error(garbage):
    with pytest.raises(SerializationError):
        from_bytes(garbage)


def test_safetensors_without_fedloom_header_is_refused():
    from safetensors.numpy import save

    data = save({"w": np.zeros(3, np.float32)})
    with pytest.raises(SerializationError, match="no fedloom header"):
        from_bytes(data)


def test_header_with_non_integer_round_is_refused():
    from safetensors.numpy import save

    w = {"w": np.zeros(3, np.float32)}
    meta = {"format": "fedloom/1", "sha256": content_hash(w), "round": "one", "client_id": "", "num_samples": "1"}
    with pytest.raises(SerializationError, match="'round' is missing or not an integer"):
        from_bytes(save(w, metadata=meta))


def test_reserved_extra_keys_and_bad_weights_refused():
    with pytest.raises(ValidationError, match="reserved"):
        to_bytes({"w": np.zeros(1, np.float32)}, extra={"sha256": "x"})
    with pytest.raises(ValidationError, match="object"):
        to_bytes({"w": np.array([object()])})
