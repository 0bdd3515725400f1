"""The semi-global model of a cluster: the formula, its weights, which peers count, integer and odd tensors."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.algorithms.semi_global import ClusterModel, fresh_peers, semi_global
from fedloom.core.errors import ValidationError


def _model(cluster: str, round: int, n: int, scale: float, counter: int = 0) -> ClusterModel:
    weights = {
        "conv.weight": np.full((2, 3), scale, dtype=np.float32),
        "bn.running_mean": np.array([scale, -scale], dtype=np.float64),
        "bn.num_batches_tracked": np.array(counter, dtype=np.int64),
        "temperature": np.array(scale, dtype=np.float32),
    }
    return ClusterModel(cluster, round, n, weights)


def test_the_semi_global_model_is_the_sample_weighted_mean_of_the_cluster_models() -> None:
    own, a2, a3 = _model("a1", 4, 30, 1.0, 10), _model("a2", 4, 10, 5.0, 20), _model("a3", 3, 60, -2.0, 31)
    result = semi_global(own, [a2, a3])
    expected = (30 * 1.0 + 10 * 5.0 + 60 * -2.0) / 100  # = -0.4
    np.testing.assert_allclose(result["conv.weight"], np.full((2, 3), expected), rtol=1e-6)
    np.testing.assert_allclose(result["bn.running_mean"], [expected, -expected], rtol=1e-15)
    assert result["bn.running_mean"].dtype == np.float64
    assert result["conv.weight"].dtype == np.float32
    # the BatchNorm counter is averaged like the engine does, rounded back, and stays a 0-d int64
    assert result["bn.num_batches_tracked"].shape == ()
    assert result["bn.num_batches_tracked"].dtype == np.int64
    assert int(result["bn.num_batches_tracked"]) == round((30 * 10 + 10 * 20 + 60 * 31) / 100)  # 23.6 -> 24
    assert result["temperature"].shape == () and result["temperature"].dtype == np.float32


def test_weights_follow_the_samples_not_the_number_of_clusters() -> None:
    own, big = _model("a1", 2, 1, 0.0), _model("a2", 2, 999, 1.0)
    assert float(semi_global(own, [big])["bn.running_mean"][0]) == pytest.approx(0.999, rel=1e-12)
    # swapping who is "own" gives the same mean: the formula is symmetric in the clusters
    swapped = semi_global(big, [own])
    assert float(swapped["bn.running_mean"][0]) == pytest.approx(0.999, rel=1e-12)


def test_without_fresh_peers_the_semi_global_model_is_the_cluster_model() -> None:
    own = _model("a1", 5, 17, 0.3, 7)
    result = semi_global(own, [])
    for name, value in own.weights.items():
        assert result[name].tobytes() == value.tobytes(), name


def test_huge_and_tiny_values_do_not_overflow_or_vanish() -> None:
    own = ClusterModel("a1", 1, 10**9, {"w": np.array([1e300, 1e-300], dtype=np.float64)})
    peer = ClusterModel("a2", 1, 10**9, {"w": np.array([1e300, 3e-300], dtype=np.float64)})
    result = semi_global(own, [peer])["w"]
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, [1e300, 2e-300], rtol=1e-12)


def test_peers_too_stale_ahead_or_of_the_own_cluster_are_left_out() -> None:
    candidates = [
        _model("a1", 6, 5, 9.0),  # the own cluster's newest record: never a peer of itself
        _model("a2", 6, 5, 1.0),  # same round: fresh
        _model("a3", 4, 5, 1.0),  # 2 rounds behind: fresh with max_staleness_rounds = 2
        _model("a4", 3, 5, 1.0),  # 3 behind: too stale
        _model("a5", 7, 5, 1.0),  # ahead of round 6: not used for round 6
    ]
    kept = fresh_peers("a1", 6, candidates, max_staleness_rounds=2)
    assert [(m.cluster, m.round) for m in kept] == [("a2", 6), ("a3", 4)]
    assert [m.cluster for m in fresh_peers("a1", 6, candidates, max_staleness_rounds=0)] == ["a2"]
    with pytest.raises(ValidationError, match="max_staleness_rounds"):
        fresh_peers("a1", 6, candidates, max_staleness_rounds=-1)
    with pytest.raises(ValidationError, match="'a2' is given twice"):
        fresh_peers("a1", 6, [*candidates, _model("a2", 5, 5, 1.0)], max_staleness_rounds=2)


def test_a_peer_model_of_another_shape_or_dtype_is_refused_naming_the_cluster() -> None:
    own = _model("a1", 1, 5, 1.0)
    bad = dict(own.weights)
    bad["conv.weight"] = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValidationError, match=r"cluster 'a2' round 1: .*conv\.weight"):
        semi_global(own, [ClusterModel("a2", 1, 5, bad)])
    wrong_dtype = dict(own.weights)
    wrong_dtype["bn.num_batches_tracked"] = np.array(3, dtype=np.int32)
    with pytest.raises(ValidationError, match="num_batches_tracked"):
        semi_global(own, [ClusterModel("a3", 1, 5, wrong_dtype)])
    with pytest.raises(ValidationError, match="num_samples"):
        semi_global(own, [ClusterModel("a4", 1, 0, own.weights)])
