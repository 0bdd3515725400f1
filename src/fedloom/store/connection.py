"""``SqlCore``: the engine, the one-transaction sessions and the schema upgrade every store part shares.

Each concept of the store (runs, models, metrics, access) is a mixin in its own module
that subclasses this core and uses only :meth:`SqlCore._session` and the blob store;
:class:`fedloom.store.SqlStore` combines them. Every public method of a part is one
short transaction, so a process killed between two calls leaves the database exactly
as the last completed call left it.

SQLite (the default) runs in WAL mode with foreign keys on; any other SQLAlchemy URL
(PostgreSQL in production) works with the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import URL, Connection, CursorResult, Engine, Update, create_engine, event, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from fedloom.core.errors import ConfigError, StoreError
from fedloom.core.redaction import redact_url
from fedloom.store.blobs import BlobStore, FileBlobStore
from fedloom.store.schema import RunRow, upgrade


class SqlCore:
    """The database engine and blob store of a store, with the transaction helper its parts use."""

    def __init__(self, url: str | URL, blob_root: Path | str | None = None, *, blobs: BlobStore | None = None) -> None:
        """``blob_root`` puts blobs in a directory; ``blobs`` takes any blob store (S3); not both."""
        if blob_root is not None and blobs is not None:
            raise ConfigError("give a store either blob_root (a directory) or blobs (a blob store), not both")
        self._blobs: BlobStore | None = FileBlobStore(blob_root) if blob_root is not None else blobs
        self._engine = _make_engine(url)
        #: the store directory when opened with :meth:`open_default` (for messages like "--home DIR")
        self.home: Path | None = None
        try:
            self._migrate()
        except BaseException:
            self._engine.dispose()  # a store that failed to open must not leak its connections
            raise

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}({url!r}, blobs={self._blobs!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections; the store object must not be used afterwards."""
        self._engine.dispose()

    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers a trivial query (``GET /v1/health``)."""
        with self._session("reach the database") as session:
            session.execute(select(1))

    def _migrate(self) -> None:
        try:
            with self._engine.begin() as conn:
                upgrade(conn)
        except sa_exc.SQLAlchemyError as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            raise StoreError(f"could not open the store at {where}: {redact_url(driver_reason(exc))}") from exc

    @contextmanager
    def _session(self, action: str, run_id: str | None = None, conflict: str | None = None) -> Iterator[Session]:
        """One transaction; database errors become ``StoreError`` saying what was being done.

        A constraint violation is explained as an unknown run when ``run_id`` names none,
        else with ``conflict`` (the duplicate that a unique constraint refused).
        """
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                yield session
        except sa_exc.IntegrityError as exc:
            if run_id is not None and not self._run_exists(run_id):
                raise StoreError(f"could not {action}: no run with id {run_id!r}") from exc
            raise StoreError(conflict or f"could not {action}: {driver_reason(exc)}") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(f"could not {action}: {driver_reason(exc)}") from exc

    def _run_exists(self, run_id: str) -> bool:
        with self._session("look up a run") as session:
            return session.get(RunRow, run_id) is not None

    def _put_blob(self, data: bytes) -> str | None:
        return None if self._blobs is None else self._blobs.put(data)


def _make_engine(url: str | URL) -> Engine:
    """Create the engine, turning a bad URL or a missing driver into a ``StoreError``.

    Server databases get ``pool_pre_ping``: a long-running aggregator outlives database
    restarts and idle-connection timeouts, and a stale pooled connection would fail the
    next request instead of being replaced.
    """
    try:
        engine = create_engine(url, pool_pre_ping=not _is_sqlite(url))
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError, ValueError) as exc:
        shown = redact_url(url.render_as_string(hide_password=True) if isinstance(url, URL) else url)
        raise StoreError(
            f"cannot use database URL {shown!r}: {redact_url(exc)} (PostgreSQL needs `pip install fedloom[postgres]`)"
        ) from None  # the chained exception would print the URL, password included
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _is_sqlite(url: str | URL) -> bool:
    name = url.drivername if isinstance(url, URL) else str(url).split(":", 1)[0]
    return name.split("+", 1)[0] == "sqlite"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers never block the writer), enforced foreign keys, and a busy wait.

    ``synchronous=NORMAL`` in WAL mode keeps every commit across a process crash
    (SIGKILL) and the file always consistent; only an OS crash may lose the last commits.
    The driver's own transaction handling is switched off (see :func:`_sqlite_on_begin`).
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL", "busy_timeout=10000"):
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def rowcount(session: Session, statement: Update) -> int:
    """How many rows an UPDATE matched, so a missing target is reported instead of ignored."""
    result = cast("CursorResult[Any]", session.execute(statement))
    return int(result.rowcount)


def _sqlite_on_begin(connection: Connection) -> None:
    """Start every transaction explicitly.

    Python's sqlite3 only opens a transaction before INSERT/UPDATE/DELETE, so DDL in a
    migration and the reads before a write would run outside it; an explicit BEGIN makes
    a schema upgrade all-or-nothing and gives each transaction one consistent snapshot.
    """
    connection.exec_driver_sql("BEGIN")


def driver_reason(exc: sa_exc.SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's multi-line statement dump."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
