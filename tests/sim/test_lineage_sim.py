"""A simulated run (numpy logreg on digits) records a lineage chain that ``verify_lineage`` accepts,
and a later edit of one local model row is named by round and table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fedloom.sim.config import SimConfig
from fedloom.sim.tasks import simulate_config
from fedloom.store import SqlStore


def test_a_simulated_run_is_chained_and_verifies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = SimConfig(dataset="digits", model="logreg", clients=4, rounds=3, fraction=1.0, lr=0.5, seed=2)
    with SqlStore.open_default(home) as store:
        result = simulate_config(config, store=store)
        assert result.run_id is not None
        run_id = result.run_id
        globals_ = store.list_global_models(run_id)
        assert [g.round for g in globals_] == [1, 2, 3]
        assert len(store.list_local_models(run_id, round=2)) == 4
        report = store.verify_lineage(run_id)
    assert report.ok and (report.checked, report.unchained) == (3, ())
    with sqlite3.connect(home / "fedloom.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM global_models WHERE lineage_sha256 IS NULL").fetchone() == (0,)
        first = "(SELECT MIN(client_id) FROM local_models WHERE round = 2)"
        conn.execute(f"UPDATE local_models SET num_samples = num_samples + 1 WHERE round = 2 AND client_id = {first}")
    with SqlStore.open_default(home) as store:
        report = store.verify_lineage(run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table, report.checked) == (2, "local_models", 1)


def test_an_asynchronous_run_chains_only_the_local_models_recorded_before_each_version(tmp_path: Path) -> None:
    """FedBuff numbers a local model by the version it trained from, so it arrives after that
    version was stored: the link commits to what existed when it was written, and verifies."""
    config = SimConfig(
        dataset="digits", clients=8, rounds=4, lr=0.5, batch_size=16, speeds="pareto", mode="fedbuff",
        concurrency=3, buffer_size=3,
    )  # fmt: skip
    with SqlStore.open_default(tmp_path / "home") as store:
        result = simulate_config(config, store=store)
        assert result.run_id is not None
        later = [m for m in store.list_local_models(result.run_id) if m.round >= 1]
        assert later, "local models trained from stored versions exist"
        report = store.verify_lineage(result.run_id)
        stored = len(store.list_global_models(result.run_id))
    assert report.ok and report.checked == stored == 4
