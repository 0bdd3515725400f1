import numpy as np
import pytest
from partition_helpers import assert_exact_cover

from fedloom.core.errors import ConfigError
from fedloom.sim.partition import (
    PARTITION_SCHEMES,
    dirichlet,
    iid,
    partition,
    partition_stats,
    quantity_skew,
    shards,
)

#: the schemes that need nothing but the labels (the others have their own test_partition_<scheme>.py)
LABEL_SCHEMES = ("iid", "dirichlet", "shards", "quantity")
ALL = PARTITION_SCHEMES


def toy_labels(n=1000, num_classes=10, seed=123):
    return np.random.default_rng(seed).integers(0, num_classes, size=n).astype(np.int64)


def balanced_labels(per_class=600, num_classes=10):
    return np.repeat(np.arange(num_classes), per_class).astype(np.int64)


def mean_kl_to_global(stats):
    global_dist = stats.sum(axis=0) / stats.sum()
    local = stats / stats.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(local > 0, local * np.log(local / global_dist), 0.0)
    return float(terms.sum(axis=1).mean())


@pytest.mark.parametrize("scheme", LABEL_SCHEMES)
@pytest.mark.parametrize(("n", "num_clients"), [(1000, 10), (997, 7), (200, 20), (50, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_sample_exactly_once(scheme, n, num_clients, seed):
    labels = toy_labels(n, seed=seed + 10)
    classes_per_client = max(2, -(-10 // num_clients))  # shards must deal all 10 classes
    parts = partition(scheme, labels, num_clients, seed, alpha=0.5, classes_per_client=classes_per_client)
    assert_exact_cover(parts, n, num_clients)
    assert min(p.size for p in parts) >= 1


@pytest.mark.parametrize("scheme", LABEL_SCHEMES)
def test_deterministic_per_seed(scheme):
    labels = toy_labels()
    a = partition(scheme, labels, 10, 7)
    b = partition(scheme, labels, 10, 7)
    c = partition(scheme, labels, 10, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_and_labels():
    parts = iid(1003, 10, seed=0)
    assert sorted({p.size for p in parts}) == [100, 101]
    labels = balanced_labels(100)
    stats = partition_stats(iid(1000, 5, seed=0), labels, 10)
    assert stats.min() > 5  # every client sees every class


def test_dirichlet_small_alpha_is_more_skewed():
    labels = balanced_labels()
    skew = {}
    for alpha in (0.1, 100.0):
        stats = [partition_stats(dirichlet(labels, 20, alpha, seed), labels, 10) for seed in range(3)]
        skew[alpha] = (
            np.mean([(s > 0).sum(axis=1).mean() for s in stats]),
            np.mean([mean_kl_to_global(s) for s in stats]),
        )
    classes_small, kl_small = skew[0.1]
    classes_large, kl_large = skew[100.0]
    assert classes_small < 5 < classes_large == 10
    assert kl_small > 0.8
    assert kl_large < 0.05


def test_dirichlet_min_size_enforced():
    labels = balanced_labels(100)
    unconstrained = dirichlet(labels, 20, 0.2, seed=0, min_size=0)
    assert min(p.size for p in unconstrained) < 10
    parts = dirichlet(labels, 20, 0.2, seed=0, min_size=10)
    assert min(p.size for p in parts) >= 10
    assert_exact_cover(parts, 1000, 20)


def test_dirichlet_gives_up_with_clear_error():
    labels = balanced_labels(10, 2)
    with pytest.raises(ConfigError, match=r"no draw in \d+ tries.*min_size=3.*raise alpha"):
        dirichlet(labels, 6, 0.01, seed=0, min_size=3)


def test_dirichlet_balance_caps_sizes():
    labels = balanced_labels()
    sizes = [p.size for p in dirichlet(labels, 10, 0.1, seed=0)]
    unbalanced = [p.size for p in dirichlet(labels, 10, 0.1, seed=0, balance=False)]
    assert sum(sizes) == sum(unbalanced) == 6000
    assert max(sizes) <= 600 + 600  # a client stops receiving once it holds n / k


@pytest.mark.parametrize("classes_per_client", [1, 2, 3])
@pytest.mark.parametrize("labels", [balanced_labels(), toy_labels(997)], ids=["balanced", "uneven"])
def test_shards_limits_classes(labels, classes_per_client):
    parts = shards(labels, 30, classes_per_client, seed=0)
    assert_exact_cover(parts, labels.size, 30)
    stats = partition_stats(parts, labels, 10)
    assert ((stats > 0).sum(axis=1) <= classes_per_client).all()


def test_shards_is_mcmahan_split_for_even_classes():
    labels = balanced_labels(600)
    parts = shards(labels, 100, 2, seed=0)
    assert {p.size for p in parts} == {60}
    stats = partition_stats(parts, labels, 10)
    assert set(np.unique(stats)) <= {0, 30, 60}


def test_quantity_skew_sizes_vary_labels_stay_global():
    labels = balanced_labels()
    parts = quantity_skew(labels.size, 10, 0.5, seed=0, min_size=20)
    sizes = np.array([p.size for p in parts])
    assert sizes.min() >= 20
    assert sizes.max() > 3 * sizes.min()
    assert_exact_cover(parts, labels.size, 10)
    stats = partition_stats(parts, labels, 10)
    big = stats[sizes >= 200]
    assert len(big) >= 3
    assert mean_kl_to_global(big) < 0.05
    iid_sizes = np.array([p.size for p in iid(labels.size, 10, 0)])
    assert sizes.std() > 10 * iid_sizes.std() + 50


def test_partition_stats_matrix():
    labels = np.array([0, 1, 1, 2, 2, 2])
    stats = partition_stats([np.array([0, 1]), np.array([2, 3, 4, 5])], labels, 4)
    np.testing.assert_array_equal(stats, [[1, 1, 0, 0], [0, 1, 3, 0]])
    assert stats.dtype == np.int64
    with pytest.raises(ConfigError, match="num_classes"):
        partition_stats([np.array([0])], labels, 2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda y: iid(10, 0, 0), r"num_clients must be an integer >= 1"),
        (lambda y: iid(10, 11, 0), r"num_clients must be between 1 and the number of samples \(10\)"),
        (lambda y: dirichlet(y, 5, 0.0, 0), r"alpha must be a finite number > 0"),
        (lambda y: dirichlet(y, 5, -1.0, 0), r"alpha"),
        (lambda y: quantity_skew(100, 5, float("nan"), 0), r"alpha"),
        (lambda y: quantity_skew(100, 5, 1.0, 0, min_size=21), r"min_size must be between 0 and .* = 20"),
        (lambda y: dirichlet(y, 5, 1.0, 0, min_size=-1), r"min_size must be an integer >= 0"),
        (lambda y: shards(y, 5, 0, 0), r"classes_per_client must be an integer >= 1"),
        (lambda y: shards(y, 5, 11, 0), r"classes_per_client must be between 2 and 10"),
        (lambda y: shards(y, 4, 2, 0), r"classes_per_client must be between 3 and 10"),
        (lambda y: partition("zipf", y, 5, 0), rf"'zipf' is unknown; valid schemes: {', '.join(ALL)}$"),
        (lambda y: partition("iid", y.astype(float), 5, 0), r"labels must be integers"),
        (lambda y: partition("iid", np.array([], np.int64), 5, 0), r"labels must be a non-empty 1-D array"),
        (lambda y: partition("iid", y, True, 0), r"num_clients"),
    ],
)
def test_errors_name_the_parameter(call, match):
    with pytest.raises(ConfigError, match=match):
        call(balanced_labels(10))


def test_partition_dispatch_matches_direct_calls():
    labels = toy_labels()
    pairs = [
        (partition("iid", labels, 5, 3), iid(labels.size, 5, 3)),
        (partition("dirichlet", labels, 5, 3, alpha=0.3), dirichlet(labels, 5, 0.3, 3)),
        (partition("shards", labels, 5, 3, classes_per_client=3), shards(labels, 5, 3, 3)),
        (partition("quantity", labels, 5, 3, alpha=2.0), quantity_skew(labels.size, 5, 2.0, 3)),
    ]
    for got, expected in pairs:
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_many_clients_is_fast():
    labels = balanced_labels(6000)
    parts = dirichlet(labels, 1000, 0.5, seed=0)
    assert_exact_cover(parts, labels.size, 1000)
