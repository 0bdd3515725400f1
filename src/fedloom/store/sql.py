"""``SqlStore``: the run record in any SQLAlchemy database, model bytes in a blob store.

The store is one class assembled from one mixin per concept, each in its own module
and each a subclass of :class:`~fedloom.store.connection.SqlCore` (the engine, the
one-transaction sessions, the schema upgrade):

- :mod:`fedloom.store.runs` — runs, clients, rounds;
- :mod:`fedloom.store.models` — global and local models and their blobs;
- :mod:`fedloom.store.server_states` — the server optimiser's state stored with each global model;
- :mod:`fedloom.store.metrics` — metrics and rejections;
- :mod:`fedloom.store.access` — join tokens, agents, credentials;
- :mod:`fedloom.store.lineage` — the hash chain of a run's global models and its verification;
- :mod:`fedloom.store.cluster_models` — the cluster models a federation of aggregators shares.

Mixins rather than delegation because every part shares the same engine and the same
transaction helper and no state of its own: a part is a group of methods, and the one
``SqlStore`` object keeps the flat API the protocols in :mod:`fedloom.core.store_protocols`
describe. Every method is tested against SQLite and PostgreSQL by the shared contract
test (``tests/store/test_store_contract.py``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import URL

from fedloom.core.errors import StoreError
from fedloom.store.access import CREDENTIAL_PREFIX, JOIN_TOKEN_PREFIX, AccessMixin
from fedloom.store.agent_logs import AgentLogsMixin
from fedloom.store.blobs import BlobStore, make_private_dir
from fedloom.store.cluster_models import ClusterModelsMixin
from fedloom.store.dashboard_queries import DashboardQueriesMixin
from fedloom.store.lineage import LineageMixin
from fedloom.store.metrics import MetricsMixin
from fedloom.store.models import ModelsMixin
from fedloom.store.round_reports import RoundReportsMixin
from fedloom.store.runs import RunsMixin
from fedloom.store.server_states import ServerStatesMixin

__all__ = [
    "BLOBS_DIRNAME",
    "CREDENTIAL_PREFIX",
    "DB_FILENAME",
    "DEFAULT_HOME",
    "HOME_ENV",
    "JOIN_TOKEN_PREFIX",
    "SqlStore",
    "resolve_home",
    "sqlite_url",
]

#: environment variable naming the default store directory
HOME_ENV = "FEDLOOM_HOME"
#: default store directory, relative to the working directory
DEFAULT_HOME = "fedloom-runs"
DB_FILENAME = "fedloom.db"
BLOBS_DIRNAME = "blobs"


def resolve_home(home: Path | str | None = None) -> Path:
    """The store directory: ``home``, else ``$FEDLOOM_HOME``, else ``./fedloom-runs``."""
    if home is not None and str(home):
        return Path(home)
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def _create_private_file(path: Path) -> None:
    """Create an empty database file readable by its owner only (SQLite would make it 0644 under
    the usual umask, and its -wal and -shm files copy the database's mode); an existing one is kept."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def sqlite_url(path: Path | str) -> URL:
    """A SQLite URL for a file path, built so odd characters in the path need no escaping."""
    return URL.create("sqlite", database=str(path))


class SqlStore(
    RunsMixin,
    ModelsMixin,
    ServerStatesMixin,
    MetricsMixin,
    AccessMixin,
    RoundReportsMixin,
    DashboardQueriesMixin,
    AgentLogsMixin,
    LineageMixin,
    ClusterModelsMixin,
):
    """The persistent record of runs: every store protocol of :mod:`fedloom.core.store_protocols`."""

    @classmethod
    def open_default(cls, home: Path | str | None = None, blobs: BlobStore | None = None) -> SqlStore:
        """Open (creating if needed) ``home/fedloom.db`` with blobs in ``home/blobs/`` or in ``blobs``."""
        root = resolve_home(home)
        try:
            make_private_dir(root / BLOBS_DIRNAME)
            _create_private_file(root / DB_FILENAME)
        except OSError as exc:
            raise StoreError(f"could not create the store directory {root}: {exc}") from exc
        if blobs is None:
            store = cls(sqlite_url(root / DB_FILENAME), blob_root=root / BLOBS_DIRNAME)
        else:
            store = cls(sqlite_url(root / DB_FILENAME), blobs=blobs)
        store.home = root
        return store
