"""Schema versioning, SQLite settings, and opening stores by URL or home directory."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.dialects import sqlite

from fedloom.core.errors import StoreError
from fedloom.store import SqlStore, resolve_home, schema
from fedloom.store.sql import sqlite_url


def _db(tmp_path: Path) -> Path:
    return tmp_path / "fedloom.db"


def _open(tmp_path: Path) -> SqlStore:
    return SqlStore(sqlite_url(_db(tmp_path)), blob_root=tmp_path / "blobs")


def _version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    _open(tmp_path).close()
    with sqlite3.connect(_db(tmp_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_apply_in_order_and_keep_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _open(tmp_path) as store:
        run_id = store.create_run("old", "simulation", {"a": 1}, seed=3)
    applied: list[int] = []

    def add_note(conn: Connection) -> None:
        applied.append(2)
        conn.execute(text("ALTER TABLE runs ADD COLUMN note TEXT"))

    def fill_note(conn: Connection) -> None:
        applied.append(3)
        conn.execute(text("UPDATE runs SET note = 'migrated'"))

    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {current + 2: fill_note, current + 1: add_note})
    with _open(tmp_path) as store:
        assert store.get_run(run_id).config == {"a": 1}
    assert applied == [2, 3]
    assert _version(_db(tmp_path)) == current + 2
    with sqlite3.connect(_db(tmp_path)) as conn:
        assert conn.execute("SELECT note FROM runs").fetchall() == [("migrated",)]
    _open(tmp_path).close()
    assert applied == [2, 3]  # an up-to-date database is left alone


def test_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _open(tmp_path).close()

    def broken(conn: Connection) -> None:
        conn.execute(text("ALTER TABLE runs ADD COLUMN note TEXT"))
        conn.execute(text("SELECT * FROM no_such_table"))

    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
    monkeypatch.setattr(schema, "MIGRATIONS", {current + 1: broken})
    with pytest.raises(StoreError, match="could not open the store"):
        _open(tmp_path)
    assert _version(_db(tmp_path)) == current
    with sqlite3.connect(_db(tmp_path)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    assert "note" not in columns


#: a database written by fedloom 0.1 at schema version 1 (``sqlite3 .dump`` of it), with one
#: deployment run, two clients, an open round, a global and a local model (hash only), a
#: metric and a rejection: the upgrade must keep every row
V1_DUMP = Path(__file__).with_name("schema_v1_sqlite.sql")
V1_RUN_ID = "4b046cd4c972441199e8b9de1ad2fc1d"


def _sqlite_schema(path: Path) -> list[tuple[str, str, str]]:
    """Every object's DDL, whitespace collapsed (``ADD COLUMN`` splices its text in on one line)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        return [(kind, name, _collapse(sql)) for kind, name, sql in rows]


def _collapse(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).replace("( ", "(").replace(" )", ")")


def test_a_real_v1_database_upgrades_to_the_current_version_in_place(tmp_path: Path) -> None:
    with sqlite3.connect(_db(tmp_path)) as conn:
        conn.executescript(V1_DUMP.read_text())
    assert _version(_db(tmp_path)) == 1
    with _open(tmp_path) as store:
        run = store.get_run(V1_RUN_ID)
        assert (run.name, run.kind, run.status, run.seed) == ("hospital-pilot", "deployment", "running", 7)
        assert run.config == {"rounds": {"max_rounds": 3}}
        assert run.created_at.tzinfo is not None
        clients = [(c.client_id, c.num_samples) for c in store.list_clients(V1_RUN_ID)]
        assert clients == [("site-a", 100), ("site-b", 50)]
        (open_round,) = store.list_rounds(V1_RUN_ID)
        assert (open_round.round, open_round.status, open_round.selected) == (1, "open", ("site-a", "site-b"))
        (local,) = store.list_local_models(V1_RUN_ID, round=1)
        assert (local.client_id, local.num_samples, dict(local.metrics)) == ("site-a", 100, {"loss": 0.25})
        assert len(store.list_global_models(V1_RUN_ID)) == 1
        assert store.metric_series(V1_RUN_ID, "accuracy") == [(1, 0.5)]
        assert [r.code for r in store.list_rejections(V1_RUN_ID)] == ["invalid_weights"]
        found = store.find_run("hospital-pilot")
        assert found is not None
        assert found.id == V1_RUN_ID
        token = store.verify_join_token(store.create_token("site-a"))
        assert token is not None
        agent, credential = store.register_agent(V1_RUN_ID, "site-a", token)
        assert store.authenticate(credential) == agent
    assert _version(_db(tmp_path)) == schema.SCHEMA_VERSION == 7
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _open(fresh).close()
    assert _sqlite_schema(_db(tmp_path)) == _sqlite_schema(_db(fresh))  # migrated DDL == created DDL


def test_newer_database_is_refused(tmp_path: Path) -> None:
    _open(tmp_path).close()
    with sqlite3.connect(_db(tmp_path)) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        _open(tmp_path)


def test_foreign_tables_without_version_are_refused(tmp_path: Path) -> None:
    with sqlite3.connect(_db(tmp_path)) as conn:
        conn.execute("CREATE TABLE runs (id TEXT)")
    with pytest.raises(StoreError, match="no schema_version"):
        _open(tmp_path)


def test_open_default_uses_home_then_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEDLOOM_HOME", raising=False)
    assert resolve_home() == Path("fedloom-runs")
    SqlStore.open_default().close()
    assert (tmp_path / "fedloom-runs" / "fedloom.db").is_file()
    assert (tmp_path / "fedloom-runs" / "blobs").is_dir()
    monkeypatch.setenv("FEDLOOM_HOME", str(tmp_path / "from-env"))
    SqlStore.open_default().close()
    assert (tmp_path / "from-env" / "fedloom.db").is_file()
    SqlStore.open_default(tmp_path / "explicit").close()
    assert (tmp_path / "explicit" / "fedloom.db").is_file()


def test_bad_urls_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="database URL"):
        SqlStore("not a url", blob_root=None)
    with pytest.raises(StoreError):
        SqlStore("postgresql+psycopg://nobody@127.0.0.1:1/none", blob_root=None)
    with pytest.raises(StoreError, match="could not open the store"):
        SqlStore(sqlite_url(tmp_path / "missing-dir" / "x.db"), blob_root=None)


def test_store_without_blob_root_records_hashes_only(tmp_path: Path) -> None:
    with SqlStore(sqlite_url(_db(tmp_path))) as store:
        run_id = store.create_run("hash-only", "simulation", {}, seed=0)
        store.save_global_model(run_id, 0, {"w": np.ones(2, dtype=np.float32)}, num_samples=0)
        (record,) = store.list_global_models(run_id)
        assert record.blob_key is None
        with pytest.raises(StoreError, match="without its weights"):
            store.load_global_model(run_id, 0)


def test_naive_datetimes_are_refused() -> None:
    column_type = schema.UtcDateTime()
    with pytest.raises(StoreError, match="naive"):
        column_type.process_bind_param(datetime(2024, 1, 1), sqlite.dialect())


_WRITER = """
import sys
import numpy as np
from fedloom.store import SqlStore
store = SqlStore.open_default(sys.argv[1])
run_id = store.create_run("killed", "deployment", {}, seed=0)
print(run_id, flush=True)
for rnd in range(1, 100_000):
    store.open_round(run_id, rnd, ["a"])
    weights = {"w": np.full(1000, rnd, dtype=np.float32)}
    store.save_local_model(run_id, rnd, "a", weights, 1, {"loss": 1.0 / rnd})
    store.save_global_model(run_id, rnd, weights, num_samples=1)
    store.close_round(run_id, rnd, num_updates=1, num_samples=1)
    print(rnd, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_run_leaves_a_resumable_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(home)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    while int(proc.stdout.readline() or 0) < 5:
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    with SqlStore.open_default(home) as store:
        models = store.list_global_models(run_id)
        assert len(models) >= 5
        for model in models:  # every row that made it points at a complete, verified blob
            assert float(store.load_global_model(run_id, model.round)["w"][0]) == model.round
        rounds = store.list_rounds(run_id)
        assert all(r.status == "closed" for r in rounds[:-1])
        assert rounds[-1].round - len(models) in (0, 1)  # at most the last round is still open
        assert store.get_run(run_id).status == "running"  # what a restarted aggregator looks for


def test_a_v2_database_gains_token_limits_and_keeps_its_tokens_and_agents(tmp_path: Path) -> None:
    with _open(tmp_path) as store:
        run_id = store.create_run("pilot", "deployment", {}, seed=0)
        join_token = store.create_token("site-a")
        record = store.verify_join_token(join_token)
        assert record is not None
        agent, _ = store.register_agent(run_id, "site-a", record)
    with sqlite3.connect(_db(tmp_path)) as conn:  # what schema version 2 left: no max_agents column
        conn.execute("ALTER TABLE global_models DROP COLUMN lineage_sha256")  # added by version 6
        conn.execute("ALTER TABLE global_models DROP COLUMN config_sha256")
        conn.execute("DROP TABLE agent_logs")  # added by version 5
        conn.execute("DROP TABLE server_states")
        conn.execute("ALTER TABLE tokens DROP COLUMN max_agents")
        conn.execute("DROP TABLE cluster_models")  # added by version 7
        conn.execute("UPDATE schema_version SET version = 2")
    with _open(tmp_path) as store:
        (token,) = store.list_tokens()
        assert (token.name, token.max_agents, token.used) == ("site-a", 1, 1)
        verified = store.verify_join_token(join_token)
        assert verified is not None
        again, credential = store.register_agent(run_id, "site-a", verified)
        assert again.id == agent.id
        assert store.authenticate(credential) is not None
    assert _version(_db(tmp_path)) == schema.SCHEMA_VERSION
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _open(fresh).close()
    assert _sqlite_schema(_db(tmp_path)) == _sqlite_schema(_db(fresh))


def test_the_v3_upgrade_masks_database_passwords_in_stored_run_configs(tmp_path: Path) -> None:
    leaked = {"server": {"db_url": "postgresql+psycopg://fedloom:hunter2@db/fl"}, "rounds": {"max_rounds": 3}}
    with _open(tmp_path) as store:
        run_id = store.create_run("old", "deployment", leaked, seed=0)
        other = store.create_run("sim", "simulation", {"lr": 0.1}, seed=0)
    with sqlite3.connect(_db(tmp_path)) as conn:
        conn.execute("ALTER TABLE global_models DROP COLUMN lineage_sha256")  # added by version 6
        conn.execute("ALTER TABLE global_models DROP COLUMN config_sha256")
        conn.execute("DROP TABLE agent_logs")  # added by version 5
        conn.execute("DROP TABLE server_states")
        conn.execute("ALTER TABLE tokens DROP COLUMN max_agents")
        conn.execute("DROP TABLE cluster_models")  # added by version 7
        conn.execute("UPDATE schema_version SET version = 2")
    with _open(tmp_path) as store:
        assert store.get_run(run_id).config == {
            "server": {"db_url": "postgresql+psycopg://fedloom:***@db/fl"},
            "rounds": {"max_rounds": 3},
        }
        assert store.get_run(other).config == {"lr": 0.1}
    with sqlite3.connect(_db(tmp_path)) as conn:
        assert "hunter2" not in "\n".join(conn.iterdump())


def test_a_v3_database_gains_server_states_and_keeps_its_models(tmp_path: Path) -> None:
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(7, dtype=np.int64)}
    with _open(tmp_path) as store:
        run_id = store.create_run("pilot", "deployment", {}, seed=0)
        store.save_global_model(run_id, 0, weights, num_samples=0)
    with sqlite3.connect(_db(tmp_path)) as conn:  # what schema version 3 left: no server_states table
        conn.execute("ALTER TABLE global_models DROP COLUMN lineage_sha256")  # added by version 6
        conn.execute("ALTER TABLE global_models DROP COLUMN config_sha256")
        conn.execute("DROP TABLE agent_logs")  # added by version 5
        conn.execute("DROP TABLE server_states")
        conn.execute("DROP TABLE cluster_models")  # added by version 7
        conn.execute("UPDATE schema_version SET version = 3")
    with _open(tmp_path) as store:
        assert _version(_db(tmp_path)) == schema.SCHEMA_VERSION == 7
        loaded = store.load_global_model(run_id, 0)
        assert all(loaded[k].tobytes() == weights[k].tobytes() for k in weights)
        assert store.load_server_state(run_id, 0) is None  # recorded before v4: resume replays instead
        state = {"m/w": np.full((2, 3), 1e-300, dtype=np.float64)}
        store.save_global_model(run_id, 1, weights, num_samples=5, server_state=(state, 1))
        again = store.load_server_state(run_id, 1)
        assert again is not None and again[1] == 1 and again[0]["m/w"].tobytes() == state["m/w"].tobytes()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _open(fresh).close()
    assert _sqlite_schema(_db(tmp_path)) == _sqlite_schema(_db(fresh))  # migrated DDL == created DDL
