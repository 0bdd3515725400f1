"""The semi-global formula, recomputed from what the shared store recorded (tests of several aggregators).

Imported by name (tests/ is on sys.path through its conftest.py) by the in-process and the end-to-end tests.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from fedloom.store import SqlStore

EPOCH = datetime(2000, 1, 1).astimezone()


def expected_semi_global(store: SqlStore, run_id: str, round_no: int) -> tuple[dict[str, np.ndarray], int]:
    """``S = Σ n_k C_k / Σ n_k`` over the cluster's own recorded model of ``round_no`` and the peer models its
    record names (each read back and checked against the recorded round, samples and hash); and ``Σ n_k``."""
    own = store.cluster_model(run_id, round_no)
    assert own is not None, f"run {run_id} recorded no cluster model for round {round_no}"
    models = [(own.num_samples, store.load_cluster_model(own))]
    for peer in own.peers:
        found = store.latest_cluster_models(own.federation, peer.round, EPOCH)
        (record,) = [r for r in found if r.cluster == peer.cluster]
        assert (record.round, record.num_samples, record.sha256) == (peer.round, peer.num_samples, peer.sha256)
        models.append((record.num_samples, store.load_cluster_model(record)))
    total = sum(n for n, _ in models)
    expected = {}
    for name, reference in models[0][1].items():
        mean = sum(n * w[name].astype(np.float64) for n, w in models) / total
        expected[name] = np.rint(mean).astype(reference.dtype) if reference.dtype.kind in "iu" else mean
    return expected, total


def check_semi_global(store: SqlStore, run_id: str, round_no: int) -> int:
    """Assert that the run's global model of ``round_no`` is the formula's semi-global model; returns Σ n_k."""
    stored = store.load_global_model(run_id, round_no)
    expected, total = expected_semi_global(store, run_id, round_no)
    assert set(stored) == set(expected)
    for name, value in stored.items():
        assert value.shape == expected[name].shape, name
        if value.dtype.kind in "iu":
            assert value.dtype == expected[name].dtype and np.array_equal(value, expected[name]), name
        else:
            np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-7, err_msg=f"{name} round {round_no}")
    return total
