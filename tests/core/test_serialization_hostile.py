"""from_bytes on payloads built by hand (8-byte little-endian header length + JSON header + bytes).

Every malformed or unsupported payload must be a SerializationError naming what was wrong,
never a KeyError, RecursionError or any other exception a server would answer with 500.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from fedloom.core import SerializationError, from_bytes, to_bytes
from fedloom.core.serialization import from_plain_bytes

META = {"format": "fedloom/1", "sha256": "0" * 64, "round": "1", "client_id": "a", "num_samples": "1"}


def handmade(tensors, metadata=None, header_text=None):
    """Safetensors bytes with ``tensors`` = [(name, dtype, shape, nbytes)] of 0x01 bytes."""
    header: dict[str, object] = {}
    data = b""
    for name, dtype, shape, size in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += b"\x01" * size
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode() if header_text is None else header_text
    return struct.pack("<Q", len(text)) + text + data


UNSUPPORTED = [("BF16", [2], 4), ("F8_E4M3", [2], 2), ("F8_E5M2", [2], 2), ("F4", [2], 1), ("F6_E2M3", [4], 3)]
UNSUPPORTED += [("U16", [2], 4), ("U64", [1], 8), ("C64", [1], 8), ("E8M0", [1], 1), ("NOPE", [1], 1)]


@pytest.mark.parametrize(("dtype", "shape", "size"), UNSUPPORTED)
def test_unsupported_dtypes_are_refused_naming_tensor_and_dtype(dtype, shape, size):
    body = handmade([("ok", "F32", [1], 4), ("layer.weight", dtype, shape, size)], META)
    for parse in (from_bytes, from_plain_bytes):
        with pytest.raises(SerializationError) as info:
            parse(body)
        assert "'layer.weight'" in str(info.value) and dtype in str(info.value)


def test_supported_dtypes_of_real_models_still_load():
    weights = {
        "bn.num_batches_tracked": np.array(7, np.int64),
        "bn.running_var": np.array([1e-300, 1e300], np.float64),
        "scale": np.array(3.5, np.float32),
        "half": np.array([65504.0, 6e-8], np.float16),
        "count": np.array([2**31 - 1], np.int32),
        "small": np.array([-128, 127], np.int8),
        "i16": np.array([7], np.int16),
        "u8": np.array([255], np.uint8),
        "mask": np.array([True, False]),
    }
    back, _ = from_bytes(to_bytes(weights, round=0, num_samples=1))
    assert {k: (v.dtype, v.shape) for k, v in back.items()} == {k: (v.dtype, v.shape) for k, v in weights.items()}
    plain, _ = from_bytes(to_bytes(weights))
    assert set(from_plain_bytes(to_bytes(weights))) == set(plain)


@pytest.mark.parametrize("depth", [200, 100_000])
def test_deeply_nested_header_json_is_refused(depth):
    for nested in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        text = b'{"__metadata__": {"format": "fedloom/1"}, "x": ' + nested + b"}"
        for parse in (from_bytes, from_plain_bytes):
            with pytest.raises(SerializationError, match="header"):
                parse(handmade([], header_text=text))


@pytest.mark.parametrize(
    "header",
    [
        {"__metadata__": {**META, "round": {"a": [1, 2]}}},
        {"__metadata__": META, "t": "not a tensor entry"},
        {"__metadata__": META, "t": {"shape": [1], "data_offsets": [0, 1]}},
        {"__metadata__": META, "t": {"dtype": 5, "shape": [1], "data_offsets": [0, 1]}},
        [1, 2, 3],
    ],
)
def test_malformed_header_entries_are_serialization_errors(header):
    with pytest.raises(SerializationError):
        from_bytes(handmade([], header_text=json.dumps(header).encode()))
