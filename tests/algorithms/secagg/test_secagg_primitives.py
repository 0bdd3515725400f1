"""The building blocks: quantisation and its error bound, the ring, Shamir, the PRG, the graph,
and the settings' refusals."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from fedloom.algorithms.secagg import ring, shamir
from fedloom.algorithms.secagg.graph import CommunicationGraph
from fedloom.algorithms.secagg.prg import mask_words
from fedloom.algorithms.secagg.settings import SecAggSettings
from fedloom.core.errors import ConfigError, ValidationError


@pytest.mark.parametrize(("clip", "bits"), [(1.0, 8), (0.01, 16), (1e6, 24), (3.0, 48)])
@pytest.mark.parametrize("stochastic", [False, True])
def test_quantisation_error_is_within_the_stated_bound(clip, bits, stochastic):
    rng = np.random.default_rng(bits)
    x = np.concatenate([rng.uniform(-clip, clip, 20_000), [clip, -clip, 0.0, clip * 1e-12]])
    q = ring.quantise(x, clip, bits, rng if stochastic else None)
    assert q.dtype == np.uint64 and int(q.max()) <= ring.levels(bits)
    back = ring.dequantise_mean(q, 1, clip, bits)
    assert np.max(np.abs(back - x)) <= ring.error_bound(clip, bits, stochastic) * (1 + 1e-9)
    if stochastic:  # unbiased: the mean error is far below a step
        assert abs(np.mean(back - x)) < ring.error_bound(clip, bits, True) / 20


def test_values_outside_the_clip_range_are_clipped_and_huge_or_tiny_values_stay_finite():
    x = np.array([1e300, -1e300, 1e-300, 2.0, -2.0])
    back = ring.dequantise_mean(ring.quantise(x, 1.0, 16), 1, 1.0, 16)
    np.testing.assert_allclose(back, [1.0, -1.0, 0.0, 1.0, -1.0], atol=ring.error_bound(1.0, 16))


def test_a_weighted_sum_dequantises_to_the_weighted_mean():
    rng = np.random.default_rng(0)
    xs, ns = rng.uniform(-1, 1, (5, 100)), [3, 1, 400, 7, 9]
    total = np.zeros(100, np.uint64)
    for x, n in zip(xs, ns, strict=True):
        total = ring.add(total, np.multiply(ring.quantise(x, 1.0, 24), np.uint64(n), dtype=np.uint64))
    mean = ring.dequantise_mean(total, sum(ns), 1.0, 24)
    expected = (np.array(ns)[:, None] * xs).sum(0) / sum(ns)
    assert np.max(np.abs(mean - expected)) <= ring.error_bound(1.0, 24)


def test_ring_arithmetic_wraps_and_signed_values_round_trip():
    top = np.array([2**64 - 1], np.uint64)
    assert ring.add(top, np.array([2], np.uint64))[0] == 1
    assert ring.subtract(np.array([0], np.uint64), np.array([1], np.uint64))[0] == 2**64 - 1
    signed = np.array([-5, 0, 7, -(2**62)], np.int64)
    np.testing.assert_array_equal(ring.to_signed(ring.from_signed(signed)), signed)


def test_settings_refuse_a_ring_that_would_wrap_naming_the_fields():
    with pytest.raises(ConfigError, match=r"bits \(40\).*max_total_samples"):
        SecAggSettings(bits=40, max_total_samples=2**24)
    SecAggSettings(bits=39, max_total_samples=2**24)  # 39 + 24 = 63 < 64
    for bad, field in [
        ({"clip_range": 0.0}, "clip_range"),
        ({"clip_range": float("nan")}, "clip_range"),
        ({"bits": 1}, "bits"),
        ({"bits": 64}, "bits"),
        ({"threshold": 0.5}, "threshold"),
        ({"threshold": 1}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"neighbours": 1}, "neighbours"),
        ({"stage_timeout_seconds": -1.0}, "stage_timeout_seconds"),
    ]:
        with pytest.raises(ConfigError, match=field):
            SecAggSettings(**bad)


def test_shamir_any_t_of_n_rebuild_and_fewer_are_refused():
    secret = bytes(range(32))
    shares = shamir.split(secret, 3, range(1, 7))
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine({x: shares[x] for x in subset}, 3) == secret
    assert shamir.combine(shares, 3) == secret
    with pytest.raises(ValidationError, match="2 share"):
        shamir.combine({x: shares[x] for x in (1, 2)}, 3)


def test_shamir_share_bytes_are_checked():
    assert shamir.share_from_bytes(shamir.share_to_bytes(12345)) == 12345
    with pytest.raises(ValidationError, match="66 bytes"):
        shamir.share_from_bytes(b"\x00" * 65)
    with pytest.raises(ValidationError, match="below the field"):
        shamir.share_from_bytes(b"\xff" * 66)


def test_prg_is_deterministic_and_domain_separated():
    seed = b"\x07" * 32
    a = mask_words(seed, 1000, "self|1")
    assert a.dtype == np.uint64 and a.shape == (1000,)
    np.testing.assert_array_equal(a, mask_words(seed, 1000, "self|1"))
    np.testing.assert_array_equal(a[:10], mask_words(seed, 10, "self|1"))
    assert not np.array_equal(a, mask_words(seed, 1000, "self|2"))
    assert not np.array_equal(a, mask_words(b"\x08" * 32, 1000, "self|1"))
    with pytest.raises(ValidationError, match="32 bytes"):
        mask_words(b"short", 3, "x")


@pytest.mark.parametrize(("n", "k"), [(10, 4), (10, 3), (9, 3), (9, 8), (10, 9), (100, 10), (5, 2), (3, 2)])
def test_graph_is_k_regular_symmetric_and_seeded(n, k):
    ids = [f"client-{i}" for i in range(n)]
    graph = CommunicationGraph(ids, k, seed=4, round=2)
    expected = k + 1 if (k % 2 and n % 2) else k
    assert graph.degree == expected
    for cid in ids:
        near = graph.neighbours(cid)
        assert len(near) == expected and cid not in near
        assert all(cid in graph.neighbours(other) for other in near)
    again = CommunicationGraph(list(reversed(ids)), k, seed=4, round=2)
    assert all(again.neighbours(c) == graph.neighbours(c) for c in ids)
    if k < n - 2:
        other_round = CommunicationGraph(ids, k, seed=4, round=3)
        assert any(other_round.neighbours(c) != graph.neighbours(c) for c in ids)


def test_graph_refuses_duplicate_ids_and_impossible_degrees():
    with pytest.raises(ConfigError, match="distinct"):
        CommunicationGraph(["a", "a", "b"], 1, 0, 1)
    with pytest.raises(ConfigError, match="neighbours"):
        CommunicationGraph(["a", "b", "c"], 3, 0, 1)


def test_without_cryptography_the_protocol_names_the_extra():
    code = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from fedloom.algorithms.secagg import SecAggSettings\n"  # the settings need no extra
        "try:\n    import fedloom.algorithms.secagg.client\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ConfigError" in out.stdout and "pip install 'fedloom[secagg]'" in out.stdout
