"""core/compression: float16, int8 and top-k deltas with error feedback, on real model shapes."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.core.compression import CompressionSpec, decode_update, encode_update
from fedloom.core.errors import ConfigError, ValidationError, WeightsMismatchError


def model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A small CNN's tensors: float32 conv + bias, a float64 tensor, a 0-d float and a BatchNorm counter."""
    return {
        "conv.weight": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=(8,)).astype(np.float32),
        "fc.weight": rng.normal(size=(10, 20)),
        "temperature": np.array(1.5, dtype=np.float32),
        "bn.num_batches_tracked": np.array(17, dtype=np.int64),
        "mask": np.array([True, False]),
    }


def trained(start: dict[str, np.ndarray], rng: np.random.Generator, size: float = 0.01) -> dict[str, np.ndarray]:
    out = {}
    for name, value in start.items():
        if value.dtype.kind == "f":
            out[name] = (value + size * rng.normal(size=value.shape)).astype(value.dtype)
        elif value.dtype.kind == "i":
            out[name] = value + 5
        else:
            out[name] = ~value
    return out


@pytest.mark.parametrize("spec", [CompressionSpec("float16"), CompressionSpec("int8"), CompressionSpec("topk", 0.1)])
def test_ints_bools_and_0d_pass_exactly_and_shapes_dtypes_follow_the_global(spec):
    rng = np.random.default_rng(0)
    start = model(rng)
    local = trained(start, rng)
    packed, _ = encode_update(local, start, spec)
    decoded = decode_update(packed, start)
    for name, value in start.items():
        assert decoded[name].dtype == value.dtype and decoded[name].shape == value.shape, name
    assert decoded["bn.num_batches_tracked"].item() == 22
    assert np.array_equal(decoded["mask"], [False, True])
    assert decoded["temperature"].item() == local["temperature"].item()


def test_float16_error_is_within_the_stated_bound():
    rng = np.random.default_rng(1)
    start = model(rng)
    local = trained(start, rng, size=0.3)
    decoded = decode_update(encode_update(local, start, CompressionSpec("float16"))[0], start)
    for name in ("conv.weight", "fc.weight"):
        delta = local[name].astype(np.float64) - start[name]
        err = np.abs(decoded[name].astype(np.float64) - local[name])
        # half-precision rounding plus the final cast back to the tensor's own dtype
        cast = np.abs(local[name]).astype(np.float64) * float(np.finfo(local[name].dtype).eps)
        assert (err <= np.abs(delta) * 2.0**-11 + 2.0**-25 + cast).all(), name
        assert err.max() > 0  # lossy: the test would notice an encoder that sent everything raw


def test_int8_error_is_at_most_half_a_step_of_the_per_tensor_scale():
    rng = np.random.default_rng(2)
    start = model(rng)
    local = trained(start, rng, size=0.5)
    packed, _ = encode_update(local, start, CompressionSpec("int8"))
    enc = packed.tensors["fc.weight"]
    assert enc.kind == "int8" and enc.values.dtype == np.int8 and enc.scale is not None
    delta = local["fc.weight"] - start["fc.weight"]
    assert enc.scale == pytest.approx(np.abs(delta).max() / 127, rel=1e-12)
    decoded = decode_update(packed, start)
    err = np.abs(decoded["fc.weight"] - local["fc.weight"])
    assert err.max() <= enc.scale / 2 * (1 + 1e-9)
    assert err.max() > enc.scale / 100


def test_topk_sends_the_largest_fraction_and_keeps_the_rest_as_residual():
    start = {"w": np.zeros(10, dtype=np.float32)}
    local = {"w": np.array([0.1, -5, 0.2, 3, 0, 0, -0.3, 0, 4, 0], dtype=np.float32)}
    packed, residual = encode_update(local, start, CompressionSpec("topk", 0.3))
    enc = packed.tensors["w"]
    assert enc.kind == "topk" and enc.indices is not None
    assert enc.indices.tolist() == [1, 3, 8]
    assert enc.values.tolist() == [-5, 3, 4]
    decoded = decode_update(packed, start)
    assert decoded["w"].tolist() == pytest.approx([0, -5, 0, 3, 0, 0, 0, 0, 4, 0])
    assert residual["w"].tolist() == pytest.approx([0.1, 0, 0.2, 0, 0, 0, -0.3, 0, 0, 0])


def test_topk_k_is_at_least_one_and_at_most_the_tensor():
    start = {"w": np.zeros(3, dtype=np.float32)}
    local = {"w": np.array([1, 2, 3], dtype=np.float32)}
    assert len(encode_update(local, start, CompressionSpec("topk", 0.0001))[0].tensors["w"].values) == 1
    assert len(encode_update(local, start, CompressionSpec("topk", 1.0))[0].tensors["w"].values) == 3


@pytest.mark.parametrize("scheme", ["float16", "int8", "topk"])
def test_error_feedback_keeps_the_running_sum_of_decoded_deltas_on_the_true_sum(scheme):
    rng = np.random.default_rng(3)
    start = model(rng)
    spec = CompressionSpec(scheme, 0.05)
    residual: dict[str, np.ndarray] | None = None
    true_sum = np.zeros(start["fc.weight"].shape)
    sent_sum = np.zeros(start["fc.weight"].shape)
    plain_sum = np.zeros(start["fc.weight"].shape)
    for _ in range(40):
        local = trained(start, rng, size=0.1)
        packed, residual = encode_update(local, start, spec, residual)
        plain, _ = encode_update(local, start, spec)
        true_sum += local["fc.weight"] - start["fc.weight"]
        sent_sum += decode_update(packed, start)["fc.weight"] - start["fc.weight"]
        plain_sum += decode_update(plain, start)["fc.weight"] - start["fc.weight"]
    # the gap is exactly the last residual, never the sum of 40 rounds' errors
    assert np.allclose(true_sum - sent_sum, residual["fc.weight"], atol=1e-9)
    gap = np.abs(true_sum - sent_sum).max()
    assert gap <= np.abs(residual["fc.weight"]).max() + 1e-9
    if scheme == "topk":
        assert gap < 0.5 * np.abs(true_sum - plain_sum).max()


def test_huge_and_tiny_values_fall_back_to_exact_when_the_scheme_cannot_hold_them():
    start = {"big": np.array([0.0, 1.0], dtype=np.float32), "f64": np.array([-1e308, 1e308])}
    local = {"big": np.array([1e6, 1.0], dtype=np.float32), "f64": np.array([1e308, -1e308])}
    packed, residual = encode_update(local, start, CompressionSpec("float16"))
    assert packed.tensors["big"].kind == "exact"  # 1e6 overflows half precision
    assert packed.tensors["f64"].kind == "exact"  # the float64 delta itself overflows
    decoded = decode_update(packed, start)
    assert np.array_equal(decoded["big"], local["big"]) and np.array_equal(decoded["f64"], local["f64"])
    assert not residual
    tiny_start = {"t": np.zeros(4, dtype=np.float64)}
    tiny = {"t": np.array([1e-30, -1e-30, 3e-300, 0.0])}
    packed, residual = encode_update(tiny, tiny_start, CompressionSpec("int8"))
    assert np.abs(decode_update(packed, tiny_start)["t"] - tiny["t"]).max() <= 1e-30 / 254 * 1.0001
    assert np.isfinite(residual["t"]).all()


def test_bad_spec_and_bad_residual_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="scheme"):
        CompressionSpec("zip")
    with pytest.raises(ConfigError, match="topk_fraction"):
        CompressionSpec("topk", 0.0)
    with pytest.raises(ConfigError, match="topk_fraction"):
        CompressionSpec("topk", float("nan"))
    start = {"w": np.zeros(3, dtype=np.float32)}
    with pytest.raises(ValidationError, match=r"residual 'w'.*shape"):
        encode_update(start, start, CompressionSpec("int8"), {"w": np.zeros(4)})
    with pytest.raises(ValidationError, match="residual 'v'"):
        encode_update(start, start, CompressionSpec("int8"), {"v": np.zeros(3)})
    with pytest.raises(ValidationError, match=r"residual 'w'.*finite"):
        encode_update(start, start, CompressionSpec("int8"), {"w": np.array([np.nan, 0, 0])})
    with pytest.raises(WeightsMismatchError, match="missing tensors"):
        encode_update({}, start, CompressionSpec("int8"))
    with pytest.raises(WeightsMismatchError, match="'w' has dtype float64"):
        encode_update({"w": np.zeros(3)}, start, CompressionSpec("int8"))


def test_the_run_s_spec_travels_in_fit_config_extra():
    from fedloom.core.compression import spec_from_extra, spec_to_extra

    spec = CompressionSpec("topk", 0.05)
    assert spec_from_extra({"compression": spec_to_extra(spec)}) == spec
    assert spec_from_extra({}) is None
    bad_values = ("int8", {"scheme": "int8", "level": 3}, {"topk_fraction": 0.1})
    bad_values += ({"scheme": "topk", "topk_fraction": "1"},)
    for bad in bad_values:
        with pytest.raises(ConfigError, match="'compression'"):
            spec_from_extra({"compression": bad})
    with pytest.raises(ConfigError, match="scheme 'lz4' is unknown"):
        spec_from_extra({"compression": {"scheme": "lz4"}})


@pytest.mark.parametrize("scheme", ["float16", "int8", "topk"])
def test_an_empty_tensor_travels_exact(scheme):
    start = {"empty": np.zeros((0, 4), dtype=np.float32), "w": np.zeros(3, dtype=np.float32)}
    local = {"empty": np.zeros((0, 4), dtype=np.float32), "w": np.ones(3, dtype=np.float32)}
    packed, _ = encode_update(local, start, CompressionSpec(scheme, 0.5))
    assert packed.tensors["empty"].kind == "exact"
    assert decode_update(packed, start)["empty"].shape == (0, 4)
