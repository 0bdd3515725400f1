"""The lineage chain of global models (issue 11, item 3): written with every global model,
recomputed by ``verify_lineage``, and each kind of later tampering named by round and table."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedloom.core.lineage import canonical_sha256, config_sha256, lineage_link
from fedloom.core.serialization import content_hash, to_bytes
from fedloom.store import SqlStore, schema
from fedloom.store.blobs import FileBlobStore
from fedloom.store.sql import sqlite_url

CONFIG = {"strategy": {"name": "fedavg", "lr": 0.5, "mu": 1e-300}, "rounds": 3}
SITES = ("site-a", "site-b")


def _weights(value: float) -> dict[str, np.ndarray]:
    """The shapes real models have: float32, float64 with huge and tiny values, a 0-d int64 counter."""
    return {
        "conv.weight": np.full((2, 3), value, np.float32),
        "fc.bias": np.array([1e300, 5e-324, -value], np.float64),
        "bn.num_batches_tracked": np.array(int(value * 10), np.int64),
        "step": np.array(value, np.float64),
    }


def _db(home: Path) -> Path:
    return home / "fedloom.db"


def _open(home: Path, blobs: bool = True) -> SqlStore:
    return SqlStore(sqlite_url(_db(home)), blob_root=home / "blobs" if blobs else None)


def _record_run(home: Path, blobs: bool = True, rounds: int = 3) -> str:
    """Round 0 the initial model; each round two local models (site-b twice site-a's samples), then the global."""
    with _open(home, blobs) as store:
        run_id = store.create_run("chained", "simulation", CONFIG, seed=3)
        store.save_global_model(run_id, 0, _weights(0.0), num_samples=0)
        for r in range(1, rounds + 1):
            for i, site in enumerate(SITES):
                store.save_local_model(run_id, r, site, _weights(r + i / 4), 10 * (i + 1), {"loss": 1.0 / r})
            store.save_global_model(run_id, r, _weights(r + 0.1), num_samples=30)
    return run_id


def _sql(home: Path, statement: str, *params: object) -> None:
    with sqlite3.connect(_db(home)) as conn:
        conn.execute(statement, params)


def _verify(home: Path, run_id: str, blobs: bool = True):
    with _open(home, blobs) as store:
        return store.verify_lineage(run_id)


def test_canonical_hash_ignores_key_order_and_refuses_nan() -> None:
    assert canonical_sha256({"b": 1, "a": [1.5, "x"]}) == canonical_sha256({"a": [1.5, "x"], "b": 1})
    assert canonical_sha256({"a": 1}) != canonical_sha256({"a": 2})
    with pytest.raises(ValueError):
        canonical_sha256({"lr": float("nan")})
    one = lineage_link("r", 1, "m" * 64, 30, "p" * 64, [("b", "s2", 20), ("a", "s1", 10)], "c" * 64)
    assert one == lineage_link("r", 1, "m" * 64, 30, "p" * 64, [("a", "s1", 10), ("b", "s2", 20)], "c" * 64)
    assert one != lineage_link("r", 1, "m" * 64, 30, "", [("a", "s1", 10), ("b", "s2", 20)], "c" * 64)


def test_every_global_model_stores_a_link_to_the_previous_one(tmp_path: Path) -> None:
    run_id = _record_run(tmp_path)
    with sqlite3.connect(_db(tmp_path)) as conn:
        rows = conn.execute(
            "SELECT round, sha256, num_samples, lineage_sha256, config_sha256 FROM global_models ORDER BY round"
        ).fetchall()
        locals_ = conn.execute("SELECT round, client_id, sha256, num_samples FROM local_models").fetchall()
    previous = None
    for round, sha256, num_samples, link, config_hash in rows:
        assert config_hash == config_sha256(CONFIG)
        inputs = [(c, s, n) for r, c, s, n in locals_ if r == round]
        assert len(inputs) == (0 if round == 0 else 2)
        assert link == lineage_link(run_id, round, sha256, num_samples, previous, inputs, config_hash)
        previous = link
    report = _verify(tmp_path, run_id)
    assert report.ok and report.mismatch is None
    assert (report.checked, report.unchained, report.blobs_checked) == (4, (), 4 + 3 * 2)
    assert report.last_link == previous


def test_a_tampered_global_blob_is_named(tmp_path: Path) -> None:
    run_id = _record_run(tmp_path)
    with sqlite3.connect(_db(tmp_path)) as conn:
        (key,) = conn.execute("SELECT blob_key FROM global_models WHERE round = 2").fetchone()
    path = FileBlobStore(tmp_path / "blobs").path_for(key)
    path.chmod(0o600)
    path.write_bytes(to_bytes(_weights(9.0), round=2, num_samples=30))  # a well-formed model, other tensors
    report = _verify(tmp_path, run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table, report.checked) == (2, "global_models", 2)
    assert f"blob {key}" in report.mismatch.detail and "corrupted" in report.mismatch.detail


def test_a_global_row_pointing_at_another_blob_is_named(tmp_path: Path) -> None:
    run_id = _record_run(tmp_path)
    _sql(tmp_path, "UPDATE global_models SET sha256 = ? WHERE round = 1", content_hash(_weights(7.0)))
    report = _verify(tmp_path, run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table) == (1, "global_models")
    assert f"row says {content_hash(_weights(7.0))}" in report.mismatch.detail


def test_a_tampered_global_row_is_named(tmp_path: Path) -> None:
    run_id = _record_run(tmp_path)
    _sql(tmp_path, "UPDATE global_models SET num_samples = 31 WHERE round = 3")
    report = _verify(tmp_path, run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table, report.checked) == (3, "global_models", 3)
    assert "num_samples: row says 31, blob says 30" in report.mismatch.detail


def test_a_tampered_global_row_without_blobs_breaks_its_link(tmp_path: Path) -> None:
    run_id = _record_run(tmp_path, blobs=False)
    _sql(tmp_path, "UPDATE global_models SET num_samples = 31 WHERE round = 3")
    report = _verify(tmp_path, run_id, blobs=False)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table) == (3, "global_models/local_models")
    assert "lineage link: recomputed" in report.mismatch.detail


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE local_models SET num_samples = 21 WHERE round = 2 AND client_id = 'site-b'",
        "UPDATE local_models SET client_id = 'site-c' WHERE round = 2 AND client_id = 'site-b'",
        "DELETE FROM local_models WHERE round = 2 AND client_id = 'site-a'",
    ],
)
def test_a_tampered_local_row_is_named(tmp_path: Path, statement: str) -> None:
    run_id = _record_run(tmp_path)
    _sql(tmp_path, statement)
    report = _verify(tmp_path, run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table, report.checked) == (2, "local_models", 2)
    assert "the round's local models (client_id, sha256, num_samples) changed" in report.mismatch.detail


def test_a_local_row_whose_blob_no_longer_matches_is_named(tmp_path: Path) -> None:
    run_id = _record_run(tmp_path)
    _sql(tmp_path, "UPDATE local_models SET sha256 = ? WHERE round = 1 AND client_id = 'site-a'", "0" * 64)
    report = _verify(tmp_path, run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table) == (1, "local_models")
    assert "(client 'site-a')" in report.mismatch.detail and f"row says {'0' * 64}" in report.mismatch.detail


def test_a_tampered_run_config_is_named(tmp_path: Path) -> None:
    run_id = _record_run(tmp_path)
    changed = {**CONFIG, "strategy": {**CONFIG["strategy"], "lr": 5.0}}
    _sql(tmp_path, "UPDATE runs SET config = ? WHERE id = ?", json.dumps(changed), run_id)
    report = _verify(tmp_path, run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table, report.checked) == (0, "runs", 0)
    assert config_sha256(changed) in report.mismatch.detail and config_sha256(CONFIG) in report.mismatch.detail


def test_recomputing_one_link_is_caught_by_the_next(tmp_path: Path) -> None:
    """An edit whose own link is recomputed still breaks the following link (a chain, not a list)."""
    run_id = _record_run(tmp_path, blobs=False)
    with sqlite3.connect(_db(tmp_path)) as conn:
        conn.execute("UPDATE local_models SET num_samples = 11 WHERE round = 1 AND client_id = 'site-a'")
        (previous,) = conn.execute("SELECT lineage_sha256 FROM global_models WHERE round = 0").fetchone()
        sha256, n = conn.execute("SELECT sha256, num_samples FROM global_models WHERE round = 1").fetchone()
        inputs = conn.execute("SELECT client_id, sha256, num_samples FROM local_models WHERE round = 1").fetchall()
        forged = lineage_link(run_id, 1, sha256, n, previous, inputs, config_sha256(CONFIG))
        conn.execute("UPDATE global_models SET lineage_sha256 = ? WHERE round = 1", (forged,))
    report = _verify(tmp_path, run_id, blobs=False)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.checked) == (2, 2)


def test_global_models_recorded_before_v6_are_named_unchained(tmp_path: Path) -> None:
    with _open(tmp_path) as store:
        run_id = store.create_run("old", "deployment", CONFIG, seed=0)
        store.save_global_model(run_id, 0, _weights(0.0), num_samples=0)
    with sqlite3.connect(_db(tmp_path)) as conn:  # what schema version 5 left
        conn.execute("ALTER TABLE global_models DROP COLUMN lineage_sha256")
        conn.execute("ALTER TABLE global_models DROP COLUMN config_sha256")
        conn.execute("DROP TABLE cluster_models")  # added by version 7
        conn.execute("UPDATE schema_version SET version = 5")
    with _open(tmp_path) as store:
        store.save_local_model(run_id, 1, "site-a", _weights(1.0), 10, {})
        store.save_global_model(run_id, 1, _weights(1.1), num_samples=10)
        report = store.verify_lineage(run_id)
    assert report.ok and (report.checked, report.unchained) == (1, (0,))
    assert schema.SCHEMA_VERSION == 7
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _open(fresh).close()
    with sqlite3.connect(_db(tmp_path)) as old, sqlite3.connect(_db(fresh)) as new:
        query = "SELECT sql FROM sqlite_master WHERE name = 'global_models'"
        assert " ".join(old.execute(query).fetchone()[0].split()) == " ".join(new.execute(query).fetchone()[0].split())
