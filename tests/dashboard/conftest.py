"""Dashboard fixtures: the store tests' PostgreSQL server, so the dashboard's queries run on both backends."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from fedloom.store import SqlStore

_spec = importlib.util.spec_from_file_location(
    "store_conftest_for_dashboard", Path(__file__).resolve().parents[1] / "store" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_store_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_store_conftest)
#: the session's PostgreSQL (a local server the store tests start, or $FEDLOOM_TEST_POSTGRES_URL)
postgres_url = _store_conftest.postgres_url


def _fresh_database(url: str) -> str:
    """A new empty database on the server of ``url``; returns its URL."""
    name = f"dash_{uuid.uuid4().hex[:12]}"
    server = make_url(url)
    engine = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """A store on SQLite (``open_default``) or on a fresh PostgreSQL database with blobs in tmp_path."""
    if request.param == "sqlite":
        opened = SqlStore.open_default(tmp_path / "home")
    else:
        opened = SqlStore(_fresh_database(request.getfixturevalue("postgres_url")), blob_root=tmp_path / "blobs")
    try:
        yield opened
    finally:
        opened.close()
