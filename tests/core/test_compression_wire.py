"""Compressed updates on the wire: a round trip through safetensors, and every hostile payload refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedloom.core import SerializationError, from_bytes, to_bytes
from fedloom.core.compression import CompressionSpec, decode_update, encode_update
from fedloom.core.compression_wire import HEADER_FIELD, INDEX_PREFIX, from_wire, to_wire


def start_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "fc.weight": rng.normal(size=(5, 6)),
        "scale": np.array(0.5, dtype=np.float32),
        "bn.num_batches_tracked": np.array(3, dtype=np.int64),
    }


def local_model(start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    floats = {k: v for k, v in start.items() if v.dtype.kind == "f"}
    out = {k: np.asarray(v + 0.05 * rng.normal(size=v.shape)).astype(v.dtype) for k, v in floats.items()}
    out["bn.num_batches_tracked"] = np.array(9, dtype=np.int64)
    return out


def wire(scheme: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    start = start_model()
    packed, _ = encode_update(local_model(start), start, CompressionSpec(scheme, 0.2))
    return to_wire(packed)


def received(tensors: dict[str, np.ndarray], extra: dict[str, str]) -> dict[str, np.ndarray]:
    """What the server does: parse the bytes, read the header, decode against the global model."""
    weights, header = from_bytes(to_bytes(tensors, round=1, client_id="a", num_samples=3, extra=extra))
    return decode_update(from_wire(weights, header.extra), start_model())


@pytest.mark.parametrize("scheme", ["float16", "int8", "topk"])
def test_round_trip_through_bytes_equals_the_in_memory_decode_and_is_smaller(scheme):
    start = start_model()
    packed, _ = encode_update(local_model(start), start, CompressionSpec(scheme, 0.2))
    tensors, extra = to_wire(packed)
    decoded = received(tensors, extra)
    direct = decode_update(packed, start)
    for name in start:
        assert decoded[name].dtype == start[name].dtype and np.array_equal(decoded[name], direct[name]), name
    assert decoded["bn.num_batches_tracked"].item() == 9


@pytest.mark.parametrize(("scheme", "ratio"), [("float16", 0.51), ("int8", 0.26), ("topk", 0.13)])
def test_bytes_on_the_wire_shrink_by_the_scheme_s_ratio(scheme, ratio):
    rng = np.random.default_rng(9)
    start = {"conv.weight": rng.normal(size=(64, 32, 3, 3)).astype(np.float32), "fc.bias": np.zeros(200, np.float32)}
    start["bn.num_batches_tracked"] = np.array(0, dtype=np.int64)
    local = {k: np.asarray(v + rng.normal(size=v.shape)).astype(v.dtype) for k, v in start.items()}
    tensors, extra = to_wire(encode_update(local, start, CompressionSpec(scheme, 0.05))[0])
    sent = len(to_bytes(tensors, round=1, client_id="a", num_samples=3, extra=extra))
    plain = len(to_bytes(local, round=1, client_id="a", num_samples=3))
    assert sent < ratio * plain


def edit_header(extra: dict[str, str], change) -> dict[str, str]:
    header = json.loads(extra[HEADER_FIELD])
    change(header)
    return {HEADER_FIELD: json.dumps(header)}


def test_unknown_scheme_is_refused():
    tensors, extra = wire("int8")
    bad = edit_header(extra, lambda h: h.update(scheme="zstd"))
    with pytest.raises(SerializationError, match="'scheme' 'zstd' is unknown"):
        received(tensors, bad)


def test_a_kind_the_scheme_does_not_carry_is_refused():
    tensors, extra = wire("int8")
    tensors["conv.weight"] = tensors["conv.weight"].astype(np.float16)
    bad = edit_header(extra, lambda h: h["tensors"].update({"conv.weight": {"kind": "float16"}}))
    with pytest.raises(SerializationError, match=r"'conv.weight' field 'kind'.*scheme is int8"):
        received(tensors, bad)


def test_wrong_dtype_for_the_kind_is_refused():
    tensors, extra = wire("int8")
    tensors["fc.weight"] = tensors["fc.weight"].astype(np.int16)
    with pytest.raises(SerializationError, match=r"'fc.weight' field 'dtype'.*int8"):
        received(tensors, extra)


def test_nan_negative_or_missing_scale_is_refused():
    tensors, extra = wire("int8")
    for scale, words in ((float("nan"), "finite"), (-1.0, "finite"), ("0.1", "number")):
        bad = edit_header(extra, lambda h, s=scale: h["tensors"]["fc.weight"].update(scale=s))
        with pytest.raises(SerializationError, match=rf"'fc.weight' field 'scale'.*{words}"):
            received(tensors, bad)


def test_int8_value_outside_the_symmetric_range_is_refused():
    tensors, extra = wire("int8")
    tensors["fc.weight"] = tensors["fc.weight"].copy()
    tensors["fc.weight"][0, 0] = -128
    with pytest.raises(SerializationError, match=r"'fc.weight' field 'values'.*-127"):
        received(tensors, extra)


def test_topk_index_out_of_range_duplicate_or_unsorted_is_refused():
    tensors, extra = wire("topk")
    key = INDEX_PREFIX + "fc.weight"
    for change, words in (
        (lambda i: i.__setitem__(-1, 30), "index 30 is outside"),
        (lambda i: i.__setitem__(0, -1), "index -1 is outside"),
        (lambda i: i.__setitem__(1, i[0]), "appears more than once"),
        (lambda i: i.__setitem__(slice(None), i[::-1].copy()), "ascending"),
    ):
        indices = tensors[key].copy()
        change(indices)
        with pytest.raises(SerializationError, match=rf"'fc.weight' field 'indices'.*{words}"):
            received({**tensors, key: indices}, extra)


def test_topk_k_larger_than_the_tensor_or_not_matching_the_arrays_is_refused():
    tensors, extra = wire("topk")
    key = INDEX_PREFIX + "fc.weight"
    big = {**tensors, key: np.arange(31, dtype=np.int32), "fc.weight": np.zeros(31)}
    with pytest.raises(SerializationError, match=r"'fc.weight' field 'k'"):
        received(big, edit_header(extra, lambda h: h["tensors"]["fc.weight"].update(k=31)))
    with pytest.raises(SerializationError, match=r"'fc.weight' field 'k'.*holds 6 values"):
        received(tensors, edit_header(extra, lambda h: h["tensors"]["fc.weight"].update(k=5)))
    with pytest.raises(SerializationError, match=r"'fc.weight' field 'indices'.*int32 or int64"):
        received({**tensors, key: tensors[key].astype(np.float32)}, extra)


def test_shapes_that_do_not_match_the_global_are_refused():
    tensors, extra = wire("float16")
    tensors["conv.weight"] = tensors["conv.weight"].reshape(4, 9)
    with pytest.raises(SerializationError, match=r"'conv.weight' field 'shape'"):
        received(tensors, extra)


def test_lossy_kind_on_an_integer_or_0d_tensor_is_refused():
    tensors, extra = wire("float16")
    tensors["bn.num_batches_tracked"] = np.array(1.0, dtype=np.float16)
    bad = edit_header(extra, lambda h: h["tensors"].update({"bn.num_batches_tracked": {"kind": "float16"}}))
    with pytest.raises(SerializationError, match=r"'bn.num_batches_tracked' field 'kind'.*travels exact"):
        received(tensors, bad)


def test_missing_extra_and_undescribed_tensors_are_refused():
    tensors, extra = wire("float16")
    without = {k: v for k, v in tensors.items() if k != "fc.weight"}
    with pytest.raises(SerializationError, match=r"'fc.weight' field 'values'.*no tensor"):
        received(without, extra)
    with pytest.raises(SerializationError, match="does not describe"):
        received({**tensors, "stowaway": np.zeros(2)}, extra)
    bad = edit_header(extra, lambda h: h["tensors"].pop("fc.weight"))
    with pytest.raises(SerializationError, match="does not describe"):
        received(tensors, bad)
    ghost = edit_header(extra, lambda h: h["tensors"].update(ghost={"kind": "exact"}))
    with pytest.raises(SerializationError, match="unexpected \\['ghost'\\]"):
        received({**tensors, "ghost": np.zeros(1)}, ghost)


def test_non_finite_values_and_overflowing_results_are_refused():
    tensors, extra = wire("float16")
    tensors["conv.weight"] = tensors["conv.weight"].copy()
    tensors["conv.weight"][0, 0, 0, 0] = np.inf
    with pytest.raises(SerializationError, match=r"'conv.weight' field 'values'.*NaN or Inf"):
        received(tensors, extra)
    tensors, extra = wire("int8")
    huge = edit_header(extra, lambda h: h["tensors"]["conv.weight"].update(scale=1e300))
    with pytest.raises(SerializationError, match=r"'conv.weight' field 'values'.*decode to NaN or Inf"):
        received(tensors, huge)


def test_garbage_header_field_is_refused():
    tensors, _ = wire("float16")
    for text, words in (("{", "not valid JSON"), ("[]", "exactly 'scheme' and 'tensors'"), ("x" * 0, "not valid")):
        with pytest.raises(SerializationError, match=words):
            received(tensors, {HEADER_FIELD: text})
    with pytest.raises(SerializationError, match="no 'compression' header field"):
        received(tensors, {})
    bad = {HEADER_FIELD: json.dumps({"scheme": "float16", "tensors": {"fc.weight": {"kind": "zip"}}})}
    with pytest.raises(SerializationError, match=r"'fc.weight' field 'kind'.*'zip' is unknown"):
        received({"fc.weight": tensors["fc.weight"]}, bad)
