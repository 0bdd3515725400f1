"""The light agent's hand-written safetensors codec: byte-compatible with fedloom.core.serialization
both ways, and every hostile payload refused with an error naming the tensor or field."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from fedloom.core.serialization import content_hash as core_hash
from fedloom.core.serialization import from_bytes, to_bytes
from fedloom.light.wire import WireError, content_hash, decode, encode

#: the shapes real models have: BatchNorm's 0-d int64 counter, float64, huge and tiny values
MODEL = {
    "conv.weight": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    "bn.running_var": np.array([1e-300, 1e300, -0.0, 5e-324], dtype=np.float64),
    "half": np.array([65504, -6.1e-5], dtype=np.float16),
    "counts": np.arange(6, dtype=np.int32).reshape(3, 2),
    "mask": np.array([True, False, True]),
    "bytes": np.array([0, 255], dtype=np.uint8),
    "small": np.array([-128, 127], dtype=np.int8),
    "shorts": np.array([-32768], dtype=np.int16),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "scalar": np.array(3.5, dtype=np.float32),
}
HEADER = {"round": "3", "client_id": "ag_1", "num_samples": "12", "metrics": json.dumps({"loss": 0.5})}


def same(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def test_what_light_writes_core_reads_and_the_hash_is_the_same():
    assert content_hash(MODEL) == core_hash(MODEL)
    weights, header = from_bytes(encode(MODEL, HEADER))
    same(weights, MODEL)
    assert (header.round, header.client_id, header.num_samples) == (3, "ag_1", 12)
    assert header.extra == {"metrics": HEADER["metrics"]}


def test_what_core_writes_light_reads():
    data = to_bytes(MODEL, round=2, client_id="x", num_samples=5)
    payload = decode(data)
    same(payload.weights, MODEL)
    assert payload.weights["bn.num_batches_tracked"].shape == ()
    assert payload.sha256 == core_hash(MODEL)
    assert payload.metadata["num_samples"] == "5"


def test_big_endian_input_is_written_little_endian_with_the_same_hash():
    big = {"w": np.array([1.5, -2.0], dtype=">f8"), "n": np.array(9, dtype=">i8")}
    native = {"w": np.array([1.5, -2.0]), "n": np.array(9, dtype=np.int64)}
    assert content_hash(big) == core_hash(native)
    same(from_bytes(encode(big, {}))[0], native)


def test_an_unsupported_dtype_is_refused_when_writing():
    with pytest.raises(WireError, match="tensor 'c' has dtype complex128"):
        encode({"c": np.zeros(2, complex)}, {})


def raw(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


META = {"format": "fedloom/1", "sha256": "0" * 64}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x02", "shorter than the 8-byte header length"),
        (struct.pack("<Q", 2**40) + b"{}", "declares a 1099511627776-byte header"),
        (raw({}, length=1 << 25), "does not fit"),
        (struct.pack("<Q", 3) + b"{x}", "not valid JSON"),
        (raw([1, 2]), "must be a JSON object"),
        (raw({"w": {}}), "no fedloom header"),
        (raw({"__metadata__": {"format": "fedloom/1", "n": 5}}), "must map names to strings"),
        (
            raw({"__metadata__": META, "w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"xx"),
            "tensor 'w' has dtype 'BF16'",
        ),
        (
            raw({"__metadata__": META, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"xxxx"),
            "needs 8 bytes but its data_offsets span 4",
        ),
        (
            raw({"__metadata__": META, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"xx"),
            "outside the 2 data bytes",
        ),
        (
            raw({"__metadata__": META, "w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"xxxx"),
            "not a list of at most 32 sizes",
        ),
        (
            raw({"__metadata__": META, "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}}, b"x"),
            "must be exactly",
        ),
        (
            raw(
                {
                    "__metadata__": META,
                    "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                    "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
                },
                b"xxx",
            ),
            "gap or overlap",
        ),
        (
            raw({"__metadata__": META, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"xx"),
            "cover 1 of the 2 data bytes",
        ),
        (
            raw({"__metadata__": META, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"x"),
            "hash mismatch",
        ),
        (
            raw({"__metadata__": META, "a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, b"x"),
            "not a list of at most 32 sizes",
        ),
    ],
)
def test_hostile_payloads_are_refused_by_name(payload, message):
    with pytest.raises(WireError, match=message.replace("[", r"\[").replace("(", r"\(")):
        decode(payload)


def test_the_size_limit_comes_before_parsing():
    with pytest.raises(WireError, match="over the limit of 10 bytes"):
        decode(encode(MODEL, {}), max_bytes=10)


def test_a_tampered_tensor_fails_the_hash():
    data = bytearray(encode({"w": np.ones(4, np.float32)}, {}))
    data[-1] ^= 1
    with pytest.raises(WireError, match="hash mismatch"):
        decode(bytes(data))
