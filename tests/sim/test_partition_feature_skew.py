import numpy as np
import pytest
from partition_helpers import assert_exact_cover, same

from fedloom.core.errors import ConfigError
from fedloom.sim.partition import feature_skew, iid, partition
from fedloom.sim.partition_features import PROJECTION_DIM, feature_clusters, feature_mean_spread


def blobs(n=2000, dims=8, centres=10, seed=0, scale=1.0, dtype=np.float64):
    """``centres`` well separated Gaussian blobs: the features a k-means can recover."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 10, size=(centres, dims))
    which = rng.integers(0, centres, size=n)
    return ((means[which] + rng.normal(0, 1, size=(n, dims))) * scale).astype(dtype), which


def test_kmeans_recovers_separated_blobs():
    x, which = blobs()
    clusters = feature_clusters(x, 10, seed=0)
    assert clusters.dtype == np.int64 and clusters.shape == (2000,)
    # the same grouping up to renaming: every blob falls in one cluster and vice versa
    pairs = set(zip(which.tolist(), clusters.tolist(), strict=True))
    assert len(pairs) == 10


@pytest.mark.parametrize("scale", [1.0, 1e300, 1e-300])
def test_huge_and_tiny_features_give_the_same_partition(scale):
    x, _ = blobs()
    assert same(feature_skew(x * scale, 10, 0.3, seed=2), feature_skew(x, 10, 0.3, seed=2))


@pytest.mark.parametrize(
    "features",
    [
        blobs()[0],
        blobs(dtype=np.float32)[0],
        np.random.default_rng(0).integers(0, 255, size=(2000, 1, 12, 12)).astype(np.uint8),  # images: projected
        np.random.default_rng(0).normal(size=2000),  # one scalar per sample
        np.ones((2000, 3)) * (np.arange(2000)[:, None] % 3),  # three distinct points only
    ],
    ids=["float64", "float32", "uint8-images", "1-d", "three-points"],
)
@pytest.mark.parametrize("alpha", [0.1, 1.0, 1000.0])
def test_every_sample_exactly_once(features, alpha):
    parts = feature_skew(features, 20, alpha, seed=1)
    assert_exact_cover(parts, 2000, 20)
    assert min(p.size for p in parts) >= 1


def test_identical_features_fail_with_the_reason():
    with pytest.raises(ConfigError, match=r"feature_skew: the features fell into 1 of 10 clusters; .*raise alpha"):
        feature_skew(np.ones((200, 3)), 20, 0.01, seed=0, min_size=5)
    assert_exact_cover(feature_skew(np.ones((200, 3)), 4, 100.0, seed=0), 200, 4)


def test_seeded():
    x, _ = blobs()
    a = feature_skew(x, 10, 0.5, seed=4)
    assert same(a, feature_skew(x, 10, 0.5, seed=4))
    assert not same(a, feature_skew(x, 10, 0.5, seed=5))
    labels = np.zeros(2000, dtype=np.int64)
    assert same(a, partition("feature_skew", labels, 10, 4, alpha=0.5, features=x))
    assert same(
        feature_skew(x, 10, 0.5, 4, num_clusters=4),
        partition("feature_skew", labels, 10, 4, alpha=0.5, features=x, feature_clusters=4),
    )


def test_feature_mean_spread_grows_as_alpha_falls_and_is_near_zero_for_iid():
    x, _ = blobs(6000)
    spread = {
        alpha: np.mean([feature_mean_spread(feature_skew(x, 20, alpha, seed), x) for seed in range(3)])
        for alpha in (0.1, 1.0, 100.0)
    }
    iid_spread = np.mean([feature_mean_spread(iid(6000, 20, seed), x) for seed in range(3)])
    assert spread[0.1] > 0.3  # a third or more of the feature variance lies between clients
    assert spread[0.1] > 2 * spread[1.0] > 2 * spread[100.0]
    assert iid_spread < 0.01 and spread[100.0] < 0.02  # (clients - 1) / samples = 0.003


def test_feature_mean_spread_numbers():
    x = np.array([[0.0, 5.0], [0.0, 5.0], [2.0, 5.0], [2.0, 5.0]])  # column 1 is constant: left out
    assert feature_mean_spread([np.array([0, 1]), np.array([2, 3])], x) == pytest.approx(1.0)
    assert feature_mean_spread([np.array([0, 2]), np.array([1, 3])], x) == pytest.approx(0.0)
    assert feature_mean_spread([np.arange(4)], np.ones((4, 2))) == 0.0
    big = x * 1e300
    assert feature_mean_spread([np.array([0, 1]), np.array([2, 3])], big) == pytest.approx(1.0)


def test_wide_features_are_projected():
    x, _ = blobs(500, dims=PROJECTION_DIM * 3)
    assert_exact_cover(feature_skew(x, 5, 0.5, seed=0), 500, 5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: feature_clusters(x, 0, 0), r"feature_clusters must be an integer >= 1"),
        (lambda x: feature_clusters(x, 101, 0), r"feature_clusters must be at most the number of samples \(100\)"),
        (lambda x: feature_skew(x, 5, 0.0, 0), r"alpha must be a finite number > 0"),
        (lambda x: feature_skew(x, 101, 1.0, 0), r"num_clients must be between 1 and the number of samples \(100\)"),
        (lambda x: feature_skew(np.where(np.arange(100)[:, None] == 7, np.nan, x), 5, 1.0, 0), r"row 7 holds NaN"),
        (lambda x: feature_skew(np.where(np.arange(100)[:, None] == 3, np.inf, x), 5, 1.0, 0), r"row 3 holds NaN"),
        (lambda x: feature_skew(x.astype(complex), 5, 1.0, 0), r"features must be real numbers, got dtype complex"),
        (lambda x: feature_skew(np.zeros((0, 3)), 5, 1.0, 0), r"features must be an array with one row per sample"),
        (lambda x: partition("feature_skew", np.zeros(100, np.int64), 5, 0), r"'feature_skew' needs features"),
        (
            lambda x: partition("feature_skew", np.zeros(99, np.int64), 5, 0, features=x),
            r"features must have one row per sample: 99 labels but features of shape \(100, 8\)",
        ),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ConfigError, match=match):
        call(blobs(100)[0])
