import numpy as np
import pytest
from partition_helpers import assert_exact_cover, label_entropy, same

from fedloom.core.errors import ConfigError
from fedloom.sim.partition import partition, partition_stats
from fedloom.sim.partition_inner import equal_sizes, inner_dirichlet


def balanced(per_class=600, num_classes=10):
    return np.repeat(np.arange(num_classes), per_class).astype(np.int64)


def uneven(n=2000, seed=4):
    return np.random.default_rng(seed).choice(5, size=n, p=[0.5, 0.2, 0.15, 0.1, 0.05]).astype(np.int64)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0, 100.0, 1e6])
@pytest.mark.parametrize(
    ("labels", "sizes"),
    [
        (balanced(), [300] * 20),
        (balanced(), [10, 50, 100, 500, 1000, 1340, 3000]),
        (uneven(), [1] * 1000 + [1000]),
        (np.zeros(30, dtype=np.int64), [10, 20]),
    ],
    ids=["equal", "given", "many-tiny", "one-class"],
)
def test_sizes_exactly_as_asked_and_every_sample_once(labels, sizes, alpha):
    parts = inner_dirichlet(labels, sizes, alpha, seed=3)
    assert_exact_cover(parts, labels.size, len(sizes))
    assert [p.size for p in parts] == sizes


def test_equal_sizes_is_the_default_of_the_dispatcher():
    labels = uneven(1003)
    np.testing.assert_array_equal(equal_sizes(1003, 10), [101, 101, 101, 100, 100, 100, 100, 100, 100, 100])
    parts = partition("inner_dirichlet", labels, 10, 5, alpha=0.3)
    assert same(parts, inner_dirichlet(labels, equal_sizes(1003, 10), 0.3, 5))
    given = partition("inner_dirichlet", labels, 3, 5, alpha=0.3, client_sizes=[3, 500, 500])
    assert [p.size for p in given] == [3, 500, 500]


def test_seeded():
    labels = balanced()
    a = inner_dirichlet(labels, [300] * 20, 0.5, seed=7)
    assert same(a, inner_dirichlet(labels, [300] * 20, 0.5, seed=7))
    assert not same(a, inner_dirichlet(labels, [300] * 20, 0.5, seed=8))


def test_label_skew_strong_at_small_alpha_and_gone_at_large():
    labels = balanced()
    entropy = {}
    for alpha in (0.1, 1.0, 100.0):
        stats = [partition_stats(inner_dirichlet(labels, [300] * 20, alpha, s), labels, 10) for s in range(3)]
        entropy[alpha] = np.mean([label_entropy(s) for s in stats])
        if alpha == 100.0:
            mix = np.concatenate(stats) / 300
            assert np.abs(mix - 0.1).max() < 0.07  # every client close to the global mix
    assert entropy[0.1] < 0.6 * np.log(10) < entropy[1.0] < entropy[100.0]
    assert entropy[100.0] > 0.98 * np.log(10)


def test_unbalanced_classes_keep_the_global_mix_on_average():
    labels = uneven(20000)
    stats = partition_stats(inner_dirichlet(labels, [100] * 200, 1.0, seed=0), labels, 5)
    global_mix = np.bincount(labels) / labels.size
    np.testing.assert_allclose(stats.sum(axis=0) / stats.sum(), global_mix)  # every sample used once
    first_pass = stats[:100].sum(axis=0) / stats[:100].sum()
    assert np.abs(first_pass - global_mix).max() < 0.05


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda y: inner_dirichlet(y, [5, 4], 1.0, 0), r"client_sizes add up to 9 but there are 10 samples"),
        (lambda y: inner_dirichlet(y, [5, 6], 1.0, 0), r"add up to 11 .*omit client_sizes for equal sizes"),
        (lambda y: inner_dirichlet(y, [10, 0], 1.0, 0), r"client_sizes must all be >= 1 .*got 0"),
        (lambda y: inner_dirichlet(y, [12, -2], 1.0, 0), r"client_sizes must all be >= 1"),
        (lambda y: inner_dirichlet(y, [], 1.0, 0), r"client_sizes must be a non-empty list of whole numbers"),
        (lambda y: inner_dirichlet(y, [5.0, 5.0], 1.0, 0), r"client_sizes must be a non-empty list of whole numbers"),
        (lambda y: inner_dirichlet(y, [5, 5], 0.0, 0), r"alpha must be a finite number > 0"),
        (lambda y: inner_dirichlet(y, [5, 5], float("inf"), 0), r"alpha must be a finite number > 0"),
        (lambda y: inner_dirichlet(y.astype(float), [5, 5], 1.0, 0), r"labels must be integers"),
        (lambda y: partition("inner_dirichlet", y, 3, 0, client_sizes=[5, 5]), r"lists 2 sizes for 3 clients"),
        (lambda y: partition("inner_dirichlet", y, 11, 0), r"num_clients must be between 1 and .* \(10\)"),
        (lambda y: partition("inner_dirichlet", y, 2, 0, groups=y), r"does not use groups .*reads client_sizes"),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ConfigError, match=match):
        call(balanced(5, 2))
