"""Shared checks of the partitioner tests: the contract every scheme promises."""

import numpy as np


def assert_exact_cover(parts, n, num_clients):
    """One sorted, duplicate-free int64 array per client; together every index in [0, n) exactly once."""
    assert len(parts) == num_clients
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0), "indices must be sorted ascending and unique within a client"
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def label_entropy(stats):
    """Mean Shannon entropy (nats) of the clients' label mixes: low = few labels per client."""
    mix = stats / stats.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(mix > 0, -mix * np.log(mix), 0.0)
    return float(terms.sum(axis=1).mean())
