"""A deployed run through a real in-process aggregator records the same lineage chain as a
simulation (both go through ``save_global_model``); a tampered global row is named."""

from __future__ import annotations

import sqlite3

from tracking_helpers import deployment_config, join, upload_body, weights_of

from fedloom.server.aggregator import Aggregator
from fedloom.store import SqlStore


def test_a_deployed_run_is_chained_and_verifies(tmp_path):
    home = tmp_path / "home"
    with SqlStore.open_default(home) as store:
        aggregator = Aggregator(deployment_config(), store, initial_weights=weights_of(0.0))
        agents = [join(aggregator, store, f"site-{i}") for i in range(3)]
        for round in (1, 2):
            for i, agent in enumerate(agents):
                aggregator.submit_update(agent, upload_body(agent.id, round, round * (i + 1), 10 * (i + 1)))
        aggregator.close()
        run_id = aggregator.run_id
        assert [g.round for g in store.list_global_models(run_id)] == [0, 1, 2]
        assert [len(store.list_local_models(run_id, round=r)) for r in (1, 2)] == [3, 3]
        report = store.verify_lineage(run_id)
    assert report.ok and (report.checked, report.unchained, report.blobs_checked) == (3, (), 3 + 6)
    with sqlite3.connect(home / "fedloom.db") as conn:
        conn.execute("UPDATE global_models SET num_samples = 59 WHERE round = 1")
    with SqlStore.open_default(home) as store:
        report = store.verify_lineage(run_id)
    assert report.mismatch is not None
    assert (report.mismatch.round, report.mismatch.table, report.checked) == (1, "global_models", 1)
    assert "num_samples: row says 59, blob says 60" in report.mismatch.detail
