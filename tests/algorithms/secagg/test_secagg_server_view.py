"""What the server receives from any one client looks uniform on Z_{2^64}: its masked
vector's bytes and bits pass uniformity tests, while the same client's unmasked encoded
update fails them badly. Fixed seeds, significance 0.001."""

import math

import numpy as np
import pytest
from secagg_helpers import layout_for

from fedloom.algorithms.secagg.client import SecAggClient
from fedloom.algorithms.secagg.local_round import LocalUpdate
from fedloom.algorithms.secagg.server import SecAggServerRound

ALPHA = 1e-3


def _normal_tail(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def _byte_p_value(words: np.ndarray) -> float:
    """Chi-square test of the 256 byte values (Wilson-Hilferty normal approximation, 255 d.o.f.)."""
    counts = np.bincount(np.ascontiguousarray(words, "<u8").view(np.uint8), minlength=256)
    expected = counts.sum() / 256
    chi2, dof = float(((counts - expected) ** 2 / expected).sum()), 255
    z = ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return _normal_tail(z)


def _worst_bit_p_value(words: np.ndarray) -> float:
    """Two-sided test that each of the 64 bit positions is 1 half the time, Bonferroni over the 64."""
    bits = ((words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.int64)
    n = len(words)
    z = np.abs(bits.sum(axis=0) - n / 2) / math.sqrt(n / 4)
    return min(1.0, 64 * 2 * _normal_tail(float(z.max())))


def _server_view(seed):
    rng = np.random.default_rng(seed)
    big = {"w": np.zeros(20_000, np.float32), "steps": np.array(5, np.int64)}
    settings, layout = layout_for(big, clip_range=1.0, bits=16, neighbours=4, threshold=3)
    updates = {
        f"c{i}": LocalUpdate(
            {"w": rng.normal(0, 0.01, 20_000).astype(np.float32), "steps": np.array(3, np.int64)}, 50 + i
        )
        for i in range(8)
    }
    names = sorted(updates)
    server = SecAggServerRound(1, names, settings, seed, layout)
    clients = {c: SecAggClient(c, 1, names, settings, seed, layout) for c in names}
    for c in names:
        server.receive_keys(clients[c].advertise_keys())
    server.close_stage()
    for c in names:
        server.receive_shares(clients[c].share_keys(server.keys_for(c)))
    server.close_stage()
    seen, plain = {}, {}
    for c in names:
        u = updates[c]
        message = clients[c].masked_input(u.delta, u.num_samples, server.shares_for(c))
        seen[c] = message.words
        plain[c] = layout.encode(u.delta, u.num_samples, None)
    return seen, plain


@pytest.mark.parametrize("seed", [0, 1])
def test_each_masked_vector_passes_uniformity_tests_and_the_unmasked_one_fails(seed):
    seen, plain = _server_view(seed)
    for cid, words in seen.items():
        assert _byte_p_value(words) > ALPHA, cid
        assert _worst_bit_p_value(words) > ALPHA, cid
        assert _byte_p_value(plain[cid]) < 1e-12
        assert _worst_bit_p_value(plain[cid]) < 1e-12


def test_masked_vectors_of_two_clients_are_uncorrelated():
    seen, _ = _server_view(3)
    a, b = (seen[c].astype(np.float64) for c in ("c0", "c1"))
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(a.size)
