"""Hostile uploads against a real aggregator: each is refused with a 4xx and a protocol code, the
refusal is recorded, and the run still closes rounds afterwards, before and after a restart.

Payloads are built by hand (8-byte little-endian header length + JSON header + raw bytes)
where fedloom's own encoder would refuse to make them. Each test names the attack it
sends; docs/security.md lists them with the defence they check.
"""

from __future__ import annotations

import json

import numpy as np
from security_helpers import (
    Agent,
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


def _answer(federation: Federation, body: bytes) -> tuple[int, str]:
    """(status, code) of an upload by the admin agent; a success or a 5xx shows as its status and body."""
    admin = federation.admin
    assert admin is not None
    response = federation.upload(admin, body)
    if response.status_code >= 500 or response.status_code < 400:
        return response.status_code, response.text[:200]
    return error_code(response)


def _refused_and_recorded(
    federation: Federation, cases: dict[str, bytes], expected: set[tuple[int, str]] | dict[str, set[tuple[int, str]]]
) -> None:
    """Every upload of ``cases`` gets one of the ``expected`` refusals (one set for all, or
    one per case) and is recorded; then the run goes on.

    All cases are sent before anything is asserted, so a failure lists every case that
    was answered wrongly, not just the first.
    """
    allowed = expected if isinstance(expected, dict) else dict.fromkeys(cases, expected)
    answers = {case: _answer(federation, body) for case, body in cases.items()}
    wrong = {case: (answer, sorted(allowed[case])) for case, answer in answers.items() if answer not in allowed[case]}
    assert not wrong, f"answered otherwise than expected (answer, allowed): {wrong}"
    admin = federation.admin
    assert admin is not None
    recorded = [code for code, client in federation.rejections() if client == admin.id]
    assert sorted(recorded) == sorted(code for _, code in answers.values()), f"refusals recorded: {recorded}"
    federation.assert_still_works()


INVALID_PAYLOAD = {(400, "invalid_payload")}
BAD_NUM_SAMPLES = {(422, "bad_num_samples"), (400, "bad_num_samples")}
BAD_WEIGHTS = {(400, "invalid_payload"), (422, "invalid_weights")}


# --------------------------------------------------------------------- metrics


def test_bad_metric_names_are_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    names = {"201-char name": "m" * 201, "NUL in name": "loss\x00evil"}
    cases = {case: update_bytes(admin.id, 1, metrics={name: 1.0}) for case, name in names.items()}
    _refused_and_recorded(federation, cases, INVALID_PAYLOAD)


def test_deeply_nested_metrics_are_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    nested = "[" * NESTING + "]" * NESTING
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100, metrics=nested)
    _refused_and_recorded(federation, {"nested metrics": hand_made_update(weights, metadata)}, INVALID_PAYLOAD)


def test_deeply_nested_safetensors_header_is_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = json.dumps(fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100))
    header = ('{"__metadata__": ' + metadata + ', "deep": ' + "[" * NESTING + "]" * NESTING + "}").encode()
    _refused_and_recorded(federation, {"nested header": safetensors_bytes(header, b"")}, INVALID_PAYLOAD)


# --------------------------------------------------------------------- numbers


def _attacked_round(federation: Federation, attacker: Agent, hostile: bytes) -> tuple[int, str]:
    """Round 1 with one hostile and one honest upload; a refused attacker then sends an honest one.

    Returns the hostile upload's (status, code); ``code`` is ``"accepted"`` when it was
    taken. Either way round 1 has closed when this returns.
    """
    admin = federation.admin
    assert admin is not None
    answer = federation.upload(attacker, hostile)
    assert answer.status_code < 500, f"the hostile upload got {answer.status_code}: {answer.text[:300]}"
    honest = federation.upload(admin, update_bytes(admin.id, 1))
    assert honest.status_code == 200, f"the honest upload after the hostile one got: {honest.text[:300]}"
    if answer.status_code != 200:
        refusal = error_code(answer)
        assert federation.upload(attacker, update_bytes(attacker.id, 1)).status_code == 200
    federation.wait_for_rounds(1)
    return refusal if answer.status_code != 200 else (200, "accepted")


def test_float64_overflow_does_not_poison_the_global_model(federation: Federation) -> None:
    """1e300 in a float64 buffer times a huge sample count overflows a float64 weighted sum."""
    admin, attacker = federation.open_run("site-1")
    hostile = real_shaped_model()
    hostile["bn.running_var"][:] = 1e300
    hostile["fc.weight"][:] = np.finfo(np.float32).max
    status, code = _attacked_round(
        federation, attacker, update_bytes(attacker.id, 1, weights=hostile, num_samples=10**12)
    )
    assert code in {"accepted", "invalid_weights", "bad_num_samples", "invalid_payload"}, (status, code)
    model = federation.global_model()
    assert all(np.isfinite(v).all() for v in model.values() if v.dtype.kind == "f"), model
    federation.assert_still_works([admin, attacker])


#: sample counts no site can have, or that are not counts at all
IMPOSSIBLE_SAMPLE_COUNTS: dict[str, object] = {
    "10**400": 10**400,
    "2**63": 2**63,
    "negative": -5,
    "zero": 0,
    "float": "1.5",
    "NaN": "NaN",
    "empty": "",
}


def test_impossible_sample_counts_are_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    cases = {
        case: hand_made_update(weights, fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=n))
        for case, n in IMPOSSIBLE_SAMPLE_COUNTS.items()
    }
    _refused_and_recorded(federation, cases, BAD_NUM_SAMPLES | INVALID_PAYLOAD)


def test_huge_sample_count_does_not_dominate_the_model(federation: Federation) -> None:
    """2**62 samples is a valid int64, but no real site has it: it must not buy the whole model."""
    admin, attacker = federation.open_run("site-1")
    hostile = update_bytes(attacker.id, 1, weights=real_shaped_model(1.0), num_samples=2**62)
    status, code = _attacked_round(federation, attacker, hostile)
    assert code in {"accepted", "bad_num_samples"}, (status, code)
    share = float(federation.global_model()["fc.weight"].mean())  # honest 0.0, attacker 1.0
    assert share <= 0.5, f"one upload claiming 2**62 samples took {share:.0%} of the model"
    federation.assert_still_works([admin, attacker])


def test_upload_for_a_future_round_is_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    rounds = {"2**31": 2**31, "2**63": 2**63, "next round": 2}
    cases = {case: update_bytes(admin.id, round_no) for case, round_no in rounds.items()}
    # a round no store column can hold may also be refused while parsing, naming the field
    beyond_int32 = {(409, "wrong_round"), (400, "invalid_payload")}
    expected = {"2**31": beyond_int32, "2**63": beyond_int32, "next round": {(409, "wrong_round")}}
    _refused_and_recorded(federation, cases, expected)


# --------------------------------------------------------------------- tensors


def test_dtypes_numpy_cannot_hold_are_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100)
    cases = {}
    for dtype in ("BF16", "F8_E4M3", "F8_E5M2"):
        raw_bias = np.zeros(10, dtype=np.uint16 if dtype == "BF16" else np.uint8)  # 10 elements of 2 or 1 bytes
        cases[dtype] = hand_made_update({**weights, "fc.bias": raw_bias}, metadata, dtypes={"fc.bias": dtype})
    _refused_and_recorded(federation, cases, BAD_WEIGHTS)


def test_tensor_posing_as_reserved_strategy_state_is_refused(federation: Federation) -> None:
    """``fedloom.*`` tensors carry server state (SCAFFOLD's control variate); a client may not inject them."""
    (admin,) = federation.open_run()
    weights = {**real_shaped_model(), "fedloom.scaffold.c/fc.weight": np.ones((10, 64), dtype=np.float32)}
    _refused_and_recorded(federation, {"fedloom.* tensor": update_bytes(admin.id, 1, weights=weights)}, BAD_WEIGHTS)


def test_tampered_content_hash_is_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100)
    weights["fc.weight"][0, 0] = 5.0  # the header still hashes the zeros
    _refused_and_recorded(federation, {"tampered": hand_made_update(weights, metadata)}, INVALID_PAYLOAD)


def test_overlapping_tensor_offsets_are_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=1, client_id=admin.id, num_samples=100)
    header = {
        "__metadata__": metadata,
        "fc.weight": {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, 2560]},
        "fc.bias": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]},
    }
    _refused_and_recorded(federation, {"overlapping": safetensors_bytes(header, bytes(2560))}, INVALID_PAYLOAD)


def test_header_length_beyond_the_payload_is_refused(federation: Federation) -> None:
    federation.open_run()
    _refused_and_recorded(federation, {"header length": (2**63 - 1).to_bytes(8, "little") + b"{}"}, INVALID_PAYLOAD)


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
ODD_ROUNDS = ["²", "³", "-1", "1e3", "%00", "latest%00", "0x1"]


def test_odd_round_in_the_model_path_is_404(federation: Federation) -> None:
    (admin,) = federation.open_run()
    answers = {}
    for text in ODD_ROUNDS:
        response = federation.get(f"/v1/models/global/{text}", admin.credential)
        ok = response.status_code in (404, 422) and error_code(response)[1] in ("not_found", "invalid_request")
        answers[text] = (response.status_code, "ok" if ok else response.text[:100])
    wrong = {text: answer for text, answer in answers.items() if answer[1] != "ok"}
    assert not wrong, f"odd rounds not answered 404/422: {wrong}"
    federation.assert_still_works()


# --------------------------------------------------------------------- the initial model


def test_hostile_initial_models_are_refused_and_a_good_one_still_opens_the_run(federation: Federation) -> None:
    """The admin's initial upload goes through the same parser: every hostile one leaves the run without a model."""
    federation.start()
    admin = federation.join("site-0", admin=True)
    weights = real_shaped_model()
    metadata = fedloom_metadata(weights, round_no=0, client_id="", num_samples=0)
    deep = '{"__metadata__": ' + json.dumps(metadata) + ', "deep": ' + "[" * NESTING + "]" * NESTING + "}"
    nan = real_shaped_model()
    nan["fc.weight"][0, 0] = np.nan
    cases = {
        "nested header": safetensors_bytes(deep.encode(), b""),
        "BF16 tensor": hand_made_update(
            {**weights, "fc.bias": np.zeros(10, dtype=np.uint16)}, metadata, dtypes={"fc.bias": "BF16"}
        ),
        "NaN": to_bytes(nan),
        "header length": (2**63 - 1).to_bytes(8, "little") + b"{}",
        "no tensors": safetensors_bytes({"__metadata__": metadata}, b""),
    }
    answers = {}
    for case, body in cases.items():
        response = federation.post("/v1/models/initial", body, admin.credential)
        ok = response.status_code in (400, 422) and error_code(response)[1] in ("invalid_payload", "invalid_weights")
        answers[case] = "ok" if ok else f"{response.status_code} {response.text[:100]}"
    wrong = {case: answer for case, answer in answers.items() if answer != "ok"}
    assert not wrong, f"hostile initial models not refused with 400/422: {wrong}"
    assert federation.get("/v1/models/global/latest", admin.credential).status_code == 404
    assert federation.post("/v1/models/initial", to_bytes(weights), admin.credential).status_code == 200
    federation.assert_still_works([admin])
