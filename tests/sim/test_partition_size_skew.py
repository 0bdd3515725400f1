import numpy as np
import pytest
from partition_helpers import assert_exact_cover, same

from fedloom.core.errors import ConfigError
from fedloom.sim.partition import partition, partition_stats
from fedloom.sim.partition_size import SIZE_SKEW_KINDS, size_skew, skewed_sizes


@pytest.mark.parametrize("kind", SIZE_SKEW_KINDS)
@pytest.mark.parametrize(("n", "num_clients"), [(6000, 10), (997, 7), (100, 100), (50, 1), (10_000, 1000)])
def test_every_sample_once_and_every_client_at_least_one(kind, n, num_clients):
    parts = size_skew(n, num_clients, kind, seed=1)
    assert_exact_cover(parts, n, num_clients)
    assert min(p.size for p in parts) >= 1


def test_sizes_follow_the_promised_law():
    np.testing.assert_array_equal(skewed_sizes(5500, 10, "linear"), 100 * np.arange(1, 11))
    np.testing.assert_array_equal(skewed_sizes(3850, 10, "square"), 10 * np.arange(1, 11) ** 2)
    weights = np.exp(np.arange(6))
    expected = 10_000 * weights / weights.sum()
    got = skewed_sizes(10_000, 6, "exponential")
    assert got.sum() == 10_000 and np.abs(got - expected).max() <= 1
    np.testing.assert_allclose(got[1:] / got[:-1], np.e, rtol=0.02)
    slow = skewed_sizes(10_000, 6, "exponential", rate=0.5)
    np.testing.assert_allclose(slow[1:] / slow[:-1], np.exp(0.5), rtol=0.01)


def test_uneven_totals_round_by_largest_remainder():
    sizes = skewed_sizes(1001, 10, "linear")
    assert sizes.sum() == 1001
    assert np.abs(sizes - 1001 * np.arange(1, 11) / 55).max() < 1


def test_the_floor_of_one_sample_comes_from_the_largest_client():
    sizes = skewed_sizes(1000, 20, "exponential")  # the law gives the first ~12 clients less than half a sample
    assert sizes.min() == 1 and sizes.sum() == 1000
    assert (sizes[:12] == 1).all()
    assert sizes[-1] == max(sizes) and np.all(np.diff(sizes) >= 0)
    huge = skewed_sizes(5000, 5000, "exponential")  # e^4999 would overflow; the law is computed relative to the top
    assert (huge == 1).all()


def test_labels_stay_iid_within_clients():
    labels = np.repeat(np.arange(10), 600)
    parts = size_skew(labels.size, 10, "square", seed=0)
    stats = partition_stats(parts, labels, 10)
    big = stats[-3:]  # the three largest clients (997, 1262, 1559 samples) hold the global mix
    mix = big / big.sum(axis=1, keepdims=True)
    assert np.abs(mix - 0.1).max() < 0.03


def test_seeded_and_sizes_independent_of_the_seed():
    a = size_skew(1000, 8, "linear", seed=3)
    assert same(a, size_skew(1000, 8, "linear", seed=3))
    b = size_skew(1000, 8, "linear", seed=4)
    assert not same(a, b)
    assert [p.size for p in a] == [p.size for p in b]
    labels = np.zeros(1000, dtype=np.int64)
    via = partition("size_skew", labels, 8, 3, size_skew="exponential", size_skew_rate=0.3)
    assert same(via, size_skew(1000, 8, "exponential", 3, rate=0.3))
    assert same(partition("size_skew", labels, 8, 3), a)  # linear is the default


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: size_skew(100, 5, "zipf", 0), r"size_skew must be one of linear, square, exponential; got 'zipf'"),
        (lambda: size_skew(100, 5, "exponential", 0, rate=0.0), r"size_skew_rate must be a finite number > 0"),
        (lambda: size_skew(100, 5, "exponential", 0, rate=float("nan")), r"size_skew_rate"),
        (lambda: size_skew(100, 101, "linear", 0), r"num_clients must be between 1 and the number of samples \(100\)"),
        (lambda: size_skew(0, 1, "linear", 0), r"num_samples must be an integer >= 1"),
        (lambda: size_skew(100, 0, "linear", 0), r"num_clients must be an integer >= 1"),
        (
            lambda: partition("size_skew", np.zeros(10, np.int64), 2, 0, alpha=0.5, feature_clusters=3),
            r"'size_skew' does not use feature_clusters \(it reads size_skew, size_skew_rate\)",
        ),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
