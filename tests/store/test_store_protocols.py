"""One store contract: the role protocols live in core, SqlStore satisfies each of them."""

from __future__ import annotations

import pytest

import fedloom.store as store_package
from fedloom.core import records, store_protocols
from fedloom.store import SqlStore
from fedloom.store.sql import sqlite_url


@pytest.fixture
def sql_store(tmp_path):
    with SqlStore(sqlite_url(tmp_path / "db.sqlite"), blob_root=tmp_path / "blobs") as opened:
        yield opened


@pytest.mark.parametrize("role", ["RunWriter", "RunReader", "AccessStore", "DeploymentStore"])
def test_sql_store_satisfies_every_role_protocol(sql_store, role):
    assert isinstance(sql_store, getattr(store_protocols, role))


def test_a_writer_only_fake_is_not_taken_for_a_reader():
    class OnlyOpens:
        def open_round(self, run_id, round, selected):  # pragma: no cover - never called
            return None

    assert not isinstance(OnlyOpens(), store_protocols.RunReader)
    assert not isinstance(OnlyOpens(), store_protocols.RunWriter)


RECORD_NAMES = (
    "RunRecord",
    "ClientRecord",
    "RoundRecord",
    "ModelRecord",
    "MetricRecord",
    "RejectionRecord",
    "TokenRecord",
    "AgentRecord",
)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_the_store_hands_out_the_core_record_types(name):
    assert getattr(store_package, name) is getattr(records, name)


def test_the_records_the_store_returns_are_core_records(sql_store):
    run_id = sql_store.create_run("r", "deployment", {}, seed=1)
    assert type(sql_store.find_run("r")) is records.RunRecord
    assert sql_store.find_run("r").id == run_id
