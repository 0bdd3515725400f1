import numpy as np
import pytest
from partition_helpers import assert_exact_cover, same

from fedloom.core.errors import ConfigError
from fedloom.sim.partition import partition
from fedloom.sim.partition_natural import natural, natural_names


def sites(n=1000, num_sites=7, seed=0):
    names = np.array([f"site-{k}" for k in range(num_sites)])
    return names[np.random.default_rng(seed).integers(0, num_sites, size=n)]


@pytest.mark.parametrize(
    "groups",
    [
        sites(),
        np.random.default_rng(1).integers(100, 140, size=997),
        np.random.default_rng(2).integers(0, 5, size=500).astype(np.uint8),
        np.array(["b", "a", "b", "c"], dtype=object),
        np.array([3, 1, 3, 2], dtype=object),
    ],
    ids=["str", "int64", "uint8", "object-str", "object-int"],
)
def test_client_k_holds_exactly_the_rows_of_group_k(groups):
    parts = natural(groups)
    names = natural_names(groups)
    distinct = sorted(set(groups.tolist()))
    assert names == [str(v) for v in distinct]
    assert_exact_cover(parts, groups.size, len(distinct))
    for k, value in enumerate(distinct):
        np.testing.assert_array_equal(parts[k], np.flatnonzero(groups == value))


def test_clients_are_ordered_by_sorted_group_value():
    groups = np.array(["zurich", "basel", "zurich", "aarau", "basel", "zurich"])
    parts = natural(groups, num_clients=3)
    assert natural_names(groups) == ["aarau", "basel", "zurich"]
    assert [p.tolist() for p in parts] == [[3], [1, 4], [0, 2, 5]]
    ints = np.array([10, 2, 10, 7])  # numeric order, not text order ("10" < "2")
    assert natural_names(ints) == ["2", "7", "10"]
    assert [p.tolist() for p in natural(ints)] == [[1], [3], [0, 2]]


def test_bytes_and_numpy_strings_name_clients_by_their_text():
    raw = np.array([b"site-b", b"site-a", b"site-b"])
    assert natural_names(raw) == ["site-a", "site-b"]
    assert [p.tolist() for p in natural(raw)] == [[1], [0, 2]]
    mixed = np.array([np.str_("x"), "y", np.str_("x")], dtype=object)
    assert natural_names(mixed) == ["x", "y"]


def test_one_client_per_sample_and_one_group():
    assert_exact_cover(natural(np.arange(50)[::-1]), 50, 50)
    assert [p.tolist() for p in natural(np.zeros(4, dtype=np.int64))] == [[0, 1, 2, 3]]


def test_dispatcher_is_independent_of_the_seed_and_checks_lengths():
    groups = sites(300)
    labels = np.random.default_rng(3).integers(0, 10, size=300)
    a = partition("natural", labels, 7, seed=0, groups=groups)
    b = partition("natural", labels, 7, seed=99, groups=groups)
    assert same(a, b) and same(a, natural(groups))
    with pytest.raises(ConfigError, match=r"'natural' needs groups .*pass groups="):
        partition("natural", labels, 7, seed=0)
    with pytest.raises(ConfigError, match=r"one row per sample: 300 labels but groups of shape \(299,\)"):
        partition("natural", labels, 7, seed=0, groups=groups[:-1])


@pytest.mark.parametrize(
    ("groups", "num_clients", "match"),
    [
        (sites(100, 7), 10, r"7 distinct values, so it makes 7 clients, but num_clients=10; set num_clients to 7"),
        (sites(100, 7), 0, r"num_clients must be an integer >= 1"),
        (np.array([], dtype=np.int64), None, r"groups must be a non-empty 1-D array"),
        (np.zeros((3, 2), dtype=np.int64), None, r"groups must be a non-empty 1-D array .* shape \(3, 2\)"),
        (np.array([0.5, 1.5]), None, r"groups must hold integers or strings .* dtype float64.*astype"),
        (np.array([True, False]), None, r"groups must hold integers or strings .* dtype bool"),
        (np.array(["a", "", "b"]), None, r"row 1 has an empty group value"),
        (np.array(["a", None, "b"], dtype=object), None, r"row 1 holds None .*fill missing ids"),
        (np.array(["a", 3], dtype=object), None, r"all strings or all integers; row 1 holds 3"),
        (np.array([1, float("nan")], dtype=object), None, r"row 1 holds nan"),
        (np.array([b"a", b"\xff"]), None, r"byte strings must be UTF-8 text"),
    ],
)
def test_bad_groups_are_refused_with_the_fix(groups, num_clients, match):
    with pytest.raises(ConfigError, match=match):
        natural(groups, num_clients)
