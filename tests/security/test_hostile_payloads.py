"""Hostile uploads against a real aggregator: each is refused with a 4xx and a protocol code, the
refusal is recorded, and the run still closes rounds afterwards, before and after a restart.

Payloads are built by hand (8-byte little-endian header length + JSON header + raw bytes)
where fedloom's own encoder would refuse to make them. Each test names the attack it
sends; docs/security.md lists them with the defence they check.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from security_helpers import (
    Federation,
    error_code,
    fedloom_metadata,
    hand_made_update,
    real_shaped_model,
    safetensors_bytes,
    update_bytes,
)

from fedloom.core import to_bytes

#: deep enough to overflow any recursive JSON parser, small enough to pass the upload limit
NESTING = 100_000


def _refused(federation: Federation, credential: str, body: bytes, expected: set[tuple[int, str]]) -> str:
    """Upload ``body``, check it got one of the ``expected`` (status, code) refusals; returns the code."""
    response = federation.post("/v1/updates", body, credential)
    assert response.status_code < 500, f"server error {response.status_code}: {response.text[:300]}"
    refusal = error_code(response)
    assert refusal in expected, f"expected one of {sorted(expected)}, got {refusal}: {response.text[:300]}"
    return refusal[1]


def _refused_and_recorded(federation: Federation, body: bytes, expected: set[tuple[int, str]]) -> None:
    admin = federation.admin
    assert admin is not None
    code = _refused(federation, admin.credential, body, expected)
    assert (code, admin.id) in federation.rejections(), "the refusal was not recorded"
    federation.assert_still_works()


INVALID_PAYLOAD = {(400, "invalid_payload")}
BAD_NUM_SAMPLES = {(422, "bad_num_samples"), (400, "bad_num_samples")}
BAD_WEIGHTS = {(400, "invalid_payload"), (422, "invalid_weights")}


# --------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    "metric_name",
    [pytest.param("m" * 201, id="201-char-name"), pytest.param("loss\x00evil", id="NUL-in-name")],
)
def test_bad_metric_names_are_refused(federation: Federation, metric_name: str) -> None:
    (admin,) = federation.open_run()
    body = update_bytes(admin.id, 1, metrics={metric_name: 1.0})
    _refused_and_recorded(federation, body, INVALID_PAYLOAD)


def test_deeply_nested_metrics_are_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    nested = "[" * NESTING + "]" * NESTING
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100, metrics=nested)
    _refused_and_recorded(federation, hand_made_update(weights, metadata), INVALID_PAYLOAD)


def test_deeply_nested_safetensors_header_is_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = json.dumps(fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100))
    header = ('{"__metadata__": ' + metadata + ', "deep": ' + "[" * NESTING + "]" * NESTING + "}").encode()
    _refused_and_recorded(federation, safetensors_bytes(header, b""), INVALID_PAYLOAD)


# --------------------------------------------------------------------- numbers


def test_float64_overflow_does_not_poison_the_global_model(federation: Federation) -> None:
    """1e300 in a float64 buffer times a huge sample count overflows a float64 weighted sum."""
    admin, attacker = federation.open_run("site-1")
    hostile = real_shaped_model()
    hostile["bn.running_var"][:] = 1e300
    hostile["fc.weight"][:] = np.finfo(np.float32).max
    answer = federation.upload(attacker, update_bytes(attacker.id, 1, weights=hostile, num_samples=10**12))
    assert answer.status_code < 500, answer.text[:300]
    honest = federation.upload(admin, update_bytes(admin.id, 1))
    assert honest.status_code == 200, honest.text
    if answer.status_code == 200:  # accepted: the aggregate must still be a usable model
        federation.wait_for_rounds(1)
        model = federation.global_model()
        assert all(np.isfinite(v).all() for v in model.values() if v.dtype.kind == "f"), model
    else:
        assert error_code(answer)[1] in {"invalid_weights", "bad_num_samples", "invalid_payload"}
    federation.assert_still_works([admin])


@pytest.mark.parametrize(
    "num_samples",
    [
        pytest.param(10**400, id="10**400"),
        pytest.param(2**63, id="2**63"),
        pytest.param(-5, id="negative"),
        pytest.param(0, id="zero"),
        pytest.param("1.5", id="float"),
        pytest.param("NaN", id="NaN"),
        pytest.param("", id="empty"),
    ],
)
def test_impossible_sample_counts_are_refused(federation: Federation, num_samples: object) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=num_samples)
    _refused_and_recorded(federation, hand_made_update(weights, metadata), BAD_NUM_SAMPLES | INVALID_PAYLOAD)


def test_huge_sample_count_does_not_dominate_the_model(federation: Federation) -> None:
    """2**62 samples is a valid int64, but no real site has it: it must not buy the whole model."""
    admin, attacker = federation.open_run("site-1")
    answer = federation.upload(
        attacker, update_bytes(attacker.id, 1, weights=real_shaped_model(1.0), num_samples=2**62)
    )
    assert answer.status_code < 500, answer.text[:300]
    honest = federation.upload(admin, update_bytes(admin.id, 1, num_samples=100))
    assert honest.status_code == 200, honest.text
    if answer.status_code == 200:
        federation.wait_for_rounds(1)
        share = float(federation.global_model()["fc.weight"].mean())  # honest 0.0, attacker 1.0
        assert share <= 0.5, f"one upload claiming 2**62 samples took {share:.0%} of the model"
    else:
        assert error_code(answer)[1] == "bad_num_samples", answer.text
    federation.assert_still_works([admin])


@pytest.mark.parametrize("round_no", [pytest.param(2**31, id="2**31"), pytest.param(2**63, id="2**63"), 2])
def test_upload_for_a_future_round_is_refused(federation: Federation, round_no: int) -> None:
    (admin,) = federation.open_run()
    _refused_and_recorded(federation, update_bytes(admin.id, round_no), {(409, "wrong_round")})


# --------------------------------------------------------------------- tensors


@pytest.mark.parametrize("dtype", ["BF16", "F8_E4M3", "F8_E5M2"])
def test_dtypes_numpy_cannot_hold_are_refused(federation: Federation, dtype: str) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100)
    raw_bias = np.zeros(10, dtype=np.uint16 if dtype == "BF16" else np.uint8)  # 10 elements of 2 or 1 bytes
    body = hand_made_update({**weights, "fc.bias": raw_bias}, metadata, dtypes={"fc.bias": dtype})
    _refused_and_recorded(federation, body, BAD_WEIGHTS)


def test_tensor_posing_as_reserved_strategy_state_is_refused(federation: Federation) -> None:
    """``fedloom.*`` tensors carry server state (SCAFFOLD's control variate); a client may not inject them."""
    (admin,) = federation.open_run()
    weights = {**real_shaped_model(), "fedloom.scaffold.c/fc.weight": np.ones((10, 64), dtype=np.float32)}
    _refused_and_recorded(federation, update_bytes(admin.id, 1, weights=weights), BAD_WEIGHTS)


def test_tampered_content_hash_is_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100)
    weights["fc.weight"][0, 0] = 5.0  # the header still hashes the zeros
    _refused_and_recorded(federation, hand_made_update(weights, metadata), INVALID_PAYLOAD)


def test_overlapping_tensor_offsets_are_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100)
    header = {
        "__metadata__": metadata,
        "fc.weight": {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, 2560]},
        "fc.bias": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]},
    }
    _refused_and_recorded(federation, safetensors_bytes(header, bytes(2560)), INVALID_PAYLOAD)


def test_header_length_beyond_the_payload_is_refused(federation: Federation) -> None:
    federation.open_run()
    _refused_and_recorded(federation, (2**63 - 1).to_bytes(8, "little") + b"{}", INVALID_PAYLOAD)


def test_model_with_a_0d_batchnorm_counter_aggregates(federation: Federation) -> None:
    """PyTorch's ``num_batches_tracked`` is a 0-d int64: an honest model of that shape must train."""
    model = real_shaped_model(counter_shape=())
    (admin,) = federation.open_run(initial=model)
    answer = federation.upload(admin, to_bytes(model, round=1, client_id=admin.id, num_samples=10))
    assert answer.status_code == 200, answer.text[:300]
    status = federation.status()
    assert status["rounds_completed"] == 1, status
    assert federation.global_model()["bn.num_batches_tracked"].shape == ()


# --------------------------------------------------------------------- paths


#: characters Python's ``str.isdigit`` accepts but ``int`` does not, and other non-rounds
@pytest.mark.parametrize("round_text", ["²", "³", "-1", "1e3", "%00", "latest%00", "0x1"])
def test_odd_round_in_the_model_path_is_404(federation: Federation, round_text: str) -> None:
    (admin,) = federation.open_run()
    response = federation.get(f"/v1/models/global/{round_text}", admin.credential)
    assert response.status_code < 500, f"{round_text!r}: {response.status_code} {response.text[:200]}"
    assert error_code(response) in {(404, "not_found"), (422, "invalid_request")}, response.text
    federation.assert_still_works()
