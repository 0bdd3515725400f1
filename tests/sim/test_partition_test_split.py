import numpy as np
import pytest
from partition_helpers import assert_exact_cover

from fedloom.core.errors import ConfigError
from fedloom.core.rng import rng_for
from fedloom.sim.partition import partition
from fedloom.sim.partition_split import held_out_count, split_client, train_test_split


def labels(n=1000):
    return np.random.default_rng(0).integers(0, 10, size=n).astype(np.int64)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.99])
@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "size_skew"])
def test_every_sample_once_across_all_train_and_test_sets(scheme, fraction):
    parts = partition(scheme, labels(), 10, seed=1, alpha=0.3)
    split = train_test_split(parts, fraction, seed=2)
    halves = [half for pair in split for half in pair if half.size]
    assert_exact_cover(halves, 1000, len(halves))
    for part, (train, test) in zip(parts, split, strict=True):
        assert train.dtype == test.dtype == np.int64
        assert test.size == min(part.size - 1, round(fraction * part.size))
        assert train.size >= 1
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), part)


def test_counts():
    assert [held_out_count(n, 0.2) for n in (0, 1, 2, 3, 10, 11)] == [0, 0, 0, 1, 2, 2]
    assert held_out_count(10, 0.0) == 0 and held_out_count(10, 0.99) == 9


def test_seeded_per_client_on_the_local_test_stream():
    part = np.arange(100, 200, dtype=np.int64)
    train, test = split_client(part, 0.3, seed=5, client=3)
    order = rng_for(5, "local-test", 3).permutation(100)  # the stream fedloom sim has always used
    np.testing.assert_array_equal(test, np.sort(part[order[:30]]))
    np.testing.assert_array_equal(train, np.sort(part[order[30:]]))
    again = split_client(part, 0.3, seed=5, client=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, test), strict=True))
    assert not np.array_equal(split_client(part, 0.3, seed=6, client=3)[1], test)
    assert not np.array_equal(split_client(part, 0.3, seed=5, client=4)[1], test)
    parts = [np.arange(0, 50), part]  # client 1's split does not depend on client 0
    assert np.array_equal(train_test_split(parts, 0.3, 5)[1][1], split_client(part, 0.3, 5, 1)[1])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), True, "0.2"])
def test_bad_fraction_names_the_parameter(fraction):
    with pytest.raises(ConfigError, match=r"test_fraction must be a number in \[0, 1\)"):
        train_test_split([np.arange(10)], fraction, 0)
