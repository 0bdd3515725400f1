"""``SqlStore``: the run record in any SQLAlchemy database, model bytes in a blob store.

Every public method is one short transaction, so a process killed between two calls
leaves the database exactly as the last completed call left it; that is what lets a
deployment aggregator resume after SIGKILL. A model's blob is written (atomically)
*before* the row that references it, so a row never points at a missing blob; the
worst a crash can leave is an unreferenced blob.

SQLite (the default) runs in WAL mode with foreign keys on; any other SQLAlchemy URL
(PostgreSQL in production) works with the same code. Every method is tested against
both by the shared contract test (``tests/store/test_store_contract.py``).

Deployment secrets (join tokens, agent credentials) are random 256-bit strings handed
out once; the store keeps only their SHA-256 (a fast hash suffices: they are not
guessable passwords) and compares digests with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import operator
import os
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from sqlalchemy import (
    URL,
    Connection,
    CursorResult,
    Engine,
    Update,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from fedloom.core.errors import IntegrityError, StoreError
from fedloom.core.redaction import redact_url
from fedloom.core.serialization import content_hash, from_bytes, to_bytes
from fedloom.core.weights import Weights, check_structure
from fedloom.store.blobs import FileBlobStore, make_private_dir
from fedloom.store.records import (
    METRIC_SCOPES,
    ROLES,
    RUN_KINDS,
    AgentRecord,
    ClientRecord,
    MetricRecord,
    ModelRecord,
    RejectionRecord,
    RoundRecord,
    RunRecord,
    TokenRecord,
)
from fedloom.store.registration import (
    revoked_agent_ids,
    usage_by_token,
    write_agent,
)
from fedloom.store.schema import (
    DEFAULT_MAX_AGENTS,
    AgentRow,
    ClientRow,
    GlobalModelRow,
    LocalModelRow,
    MetricRow,
    RejectionRow,
    RoundRow,
    RunRow,
    TokenRow,
    upgrade,
)
from fedloom.store.types import dump_json, utcnow

#: environment variable naming the default store directory
HOME_ENV = "FEDLOOM_HOME"
#: default store directory, relative to the working directory
DEFAULT_HOME = "fedloom-runs"
DB_FILENAME = "fedloom.db"
BLOBS_DIRNAME = "blobs"

_FINAL_RUN_STATUSES = ("finished", "failed", "interrupted")
_FINAL_ROUND_STATUSES = ("closed", "abandoned")
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,32}")
#: limits of the columns: names are VARCHAR(200), codes VARCHAR(100), rounds 32-bit, counts 64-bit
_MAX_NAME_LENGTH = 200
_MAX_CODE_LENGTH = 100
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_SHA256 = re.compile(r"[0-9a-f]{64}")

#: prefix of a join token (``fedloom token create``) and of an agent credential
JOIN_TOKEN_PREFIX = "flj_"  # noqa: S105 (a public prefix, not a secret)
CREDENTIAL_PREFIX = "fla_"
#: token and agent names: what is safe in a URL, a file name and a log line
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: strings longer than this cannot be one of our secrets; refused before hashing
_MAX_SECRET_LENGTH = 128


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


class SqlStore:
    """The persistent record of runs; implements :class:`fedloom.store.Store` and the readers."""

    #: seconds between two writes of an agent's ``last_seen_at``: :meth:`authenticate`
    #: runs on every request, and a write per request would serialise them on SQLite
    last_seen_interval: float = 10.0

    def __init__(self, url: str | URL, blob_root: Path | str | None = None) -> None:
        self._engine = _make_engine(url)
        self._blobs = FileBlobStore(blob_root) if blob_root is not None else None
        #: the store directory when opened with :meth:`open_default` (for messages like "--home DIR")
        self.home: Path | None = None
        try:
            self._migrate()
        except BaseException:
            self._engine.dispose()  # a store that failed to open must not leak its connections
            raise

    @classmethod
    def open_default(cls, home: Path | str | None = None) -> SqlStore:
        """Open (creating if needed) ``home/fedloom.db`` with blobs in ``home/blobs/``."""
        root = resolve_home(home)
        try:
            make_private_dir(root / BLOBS_DIRNAME)
            _create_private_file(root / DB_FILENAME)
        except OSError as exc:
            raise StoreError(f"could not create the store directory {root}: {exc}") from exc
        store = cls(sqlite_url(root / DB_FILENAME), blob_root=root / BLOBS_DIRNAME)
        store.home = root
        return store

    def __repr__(self) -> str:
        return f"SqlStore({self._engine.url.render_as_string(hide_password=True)!r}, blobs={self._blobs!r})"

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections; the store object must not be used afterwards."""
        self._engine.dispose()

    # ----------------------------------------------------------------- plumbing

    def _migrate(self) -> None:
        try:
            with self._engine.begin() as conn:
                upgrade(conn)
        except sa_exc.SQLAlchemyError as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            raise StoreError(f"could not open the store at {where}: {redact_url(_reason(exc))}") from exc

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
            raise StoreError(conflict or f"could not {action}: {_reason(exc)}") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(f"could not {action}: {_reason(exc)}") from exc

    def _run_exists(self, run_id: str) -> bool:
        with self._session("look up a run") as session:
            return session.get(RunRow, run_id) is not None

    def _put_blob(self, data: bytes) -> str | None:
        return None if self._blobs is None else self._blobs.put(data)

    # ----------------------------------------------------------------- runs

    def create_run(self, name: str, kind: str, config: Mapping[str, Any], seed: int) -> str:
        """Start a run (status ``running``) and return its id (32 hex characters)."""
        _check_choice("kind", kind, RUN_KINDS)
        row = RunRow(
            id=uuid.uuid4().hex,
            name=_check_text("run name", str(name)),
            kind=kind,
            status="running",
            seed=_check_int("seed", seed, minimum=None),
            config=_plain_json(dict(config)),
            created_at=utcnow(),
        )
        with self._session(f"create run {name!r}") as session:
            session.add(row)
        return row.id

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """Mark a run ``finished``, ``failed`` or ``interrupted`` and keep its summary."""
        _check_choice("status", status, _FINAL_RUN_STATUSES)
        values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
        if summary is not None:
            values["summary"] = _plain_json(dict(summary))
        with self._session(f"finish run {run_id}") as session:
            if _rowcount(session, update(RunRow).where(RunRow.id == run_id).values(**values)) == 0:
                raise StoreError(f"cannot finish run {run_id!r}: no such run")

    def find_run(self, name: str, kind: str = "deployment") -> RunRecord | None:
        """The newest run with this name and kind, or None: the run a restarted aggregator resumes."""
        _check_choice("kind", kind, RUN_KINDS)
        stmt = (
            select(RunRow)
            .where(RunRow.name == name, RunRow.kind == kind)
            .order_by(RunRow.created_at.desc(), RunRow.id.desc())
            .limit(1)
        )
        with self._session(f"find run {name!r}") as session:
            row = session.scalars(stmt).first()
            return None if row is None else _run_record(row)

    def reopen_run(self, run_id: str) -> None:
        """Set a run back to ``running`` and clear ``finished_at`` (its last summary is kept)."""
        values = {"status": "running", "finished_at": None}
        with self._session(f"reopen run {run_id}") as session:
            if _rowcount(session, update(RunRow).where(RunRow.id == run_id).values(**values)) == 0:
                raise StoreError(f"cannot reopen run {run_id!r}: no such run")

    # ----------------------------------------------------------------- clients

    def register_client(
        self, run_id: str, client_id: str, num_samples: int | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Record that a client belongs to the run; registering again changes nothing."""
        row = _client_row(run_id, client_id, num_samples, extra)
        with self._session(f"register client {client_id!r} in run {run_id}", run_id=run_id) as session:
            self._insert_clients(session, run_id, [row])

    def register_clients(self, run_id: str, items: Iterable[tuple[str, int | None]]) -> None:
        """Register many ``(client_id, num_samples)`` pairs in one statement (executemany)."""
        rows = {cid: _client_row(run_id, cid, n, None) for cid, n in items}
        if not rows:
            return
        with self._session(f"register {len(rows)} clients in run {run_id}", run_id=run_id) as session:
            self._insert_clients(session, run_id, list(rows.values()))

    def _insert_clients(self, session: Session, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Insert rows, skipping clients already registered (ON CONFLICT DO NOTHING where supported)."""
        keys = ["run_id", "client_id"]
        dialect = self._engine.dialect.name
        if dialect == "sqlite":
            session.execute(sqlite_insert(ClientRow).on_conflict_do_nothing(index_elements=keys), rows)
        elif dialect == "postgresql":
            session.execute(pg_insert(ClientRow).on_conflict_do_nothing(index_elements=keys), rows)
        else:
            known = set(session.scalars(select(ClientRow.client_id).where(ClientRow.run_id == run_id)))
            fresh = [row for row in rows if row["client_id"] not in known]
            if fresh:
                session.execute(insert(ClientRow), fresh)

    # ----------------------------------------------------------------- rounds

    def open_round(self, run_id: str, round: int, selected: Sequence[str]) -> None:
        """Record that ``round`` started with the ``selected`` clients (once per round)."""
        row = RoundRow(
            run_id=run_id,
            round=_check_int("round", round, maximum=_INT32_MAX),
            status="open",
            selected=[_check_name("client_id", c) for c in selected],
            opened_at=utcnow(),
            num_updates=0,
            num_samples=0,
        )
        conflict = f"round {round} of run {run_id} was already opened"
        with self._session(f"open round {round} of run {run_id}", run_id=run_id, conflict=conflict) as session:
            session.add(row)

    def close_round(
        self, run_id: str, round: int, status: str = "closed", num_updates: int = 0, num_samples: int = 0
    ) -> None:
        """Mark an open round ``closed`` (aggregated) or ``abandoned``; closing twice is an error."""
        _check_choice("status", status, _FINAL_ROUND_STATUSES)
        values = {
            "status": status,
            "closed_at": utcnow(),
            "num_updates": _check_int("num_updates", num_updates, maximum=_INT32_MAX),
            "num_samples": _check_int("num_samples", num_samples),
        }
        where = (RoundRow.run_id == run_id, RoundRow.round == round, RoundRow.status == "open")
        with self._session(f"close round {round} of run {run_id}") as session:
            if _rowcount(session, update(RoundRow).where(*where).values(**values)) == 0:
                current = session.scalar(select(RoundRow.status).where(*where[:2]))
                state = "was never opened" if current is None else f"is already {current}"
                raise StoreError(f"cannot close round {round} of run {run_id}: it {state}")

    # ----------------------------------------------------------------- models

    def save_global_model(self, run_id: str, round: int, weights: Weights, num_samples: int) -> int:
        """Store the round's single global model (blob first, then row); returns its id."""
        _check_int("round", round, maximum=_INT32_MAX)
        _check_int("num_samples", num_samples)
        check_structure(weights)
        conflict = f"run {run_id} already has a global model for round {round}: exactly one is allowed per round"
        if self._global_row_id(run_id, round) is not None:
            raise StoreError(conflict)
        sha256 = content_hash(weights)
        key = (
            self._put_blob(to_bytes(weights, round=round, num_samples=num_samples)) if self._blobs is not None else None
        )
        row = GlobalModelRow(
            run_id=run_id, round=round, num_samples=num_samples, sha256=sha256, blob_key=key, created_at=utcnow()
        )
        action = f"save the global model of run {run_id} round {round}"
        with self._session(action, run_id=run_id, conflict=conflict) as session:
            session.add(row)
            session.flush()
        return row.id

    def _global_row_id(self, run_id: str, round: int) -> int | None:
        where = (GlobalModelRow.run_id == run_id, GlobalModelRow.round == round)
        with self._session("look up a global model") as session:
            return session.scalar(select(GlobalModelRow.id).where(*where))

    def save_local_model(
        self,
        run_id: str,
        round: int,
        client_id: str,
        weights: Weights | None,
        num_samples: int,
        metrics: Mapping[str, float],
        sha256: str | None = None,
        keep_blob: bool = True,
    ) -> int:
        """Store one client's accepted update; pass ``weights=None`` with ``sha256`` to record it blob-less."""
        _check_int("round", round, maximum=_INT32_MAX)
        _check_int("num_samples", num_samples)
        sha256 = _local_hash(weights, sha256)
        key = None
        if weights is not None and keep_blob and self._blobs is not None:
            key = self._put_blob(to_bytes(weights, round=round, client_id=client_id, num_samples=num_samples))
        row = LocalModelRow(
            run_id=run_id,
            round=round,
            client_id=_check_name("client_id", client_id),
            num_samples=num_samples,
            sha256=sha256,
            blob_key=key,
            metrics={str(k): float(v) for k, v in metrics.items()},
            created_at=utcnow(),
        )
        conflict = f"client {client_id!r} already has a local model in round {round} of run {run_id}"
        action = f"save the local model of client {client_id!r} in run {run_id} round {round}"
        with self._session(action, run_id=run_id, conflict=conflict) as session:
            session.add(row)
            session.flush()
        return row.id

    # ----------------------------------------------------------------- metrics and rejections

    def record_metrics(
        self,
        run_id: str,
        round: int,
        metrics: Mapping[str, float],
        scope: str = "server",
        client_id: str | None = None,
    ) -> None:
        """Record named values measured in ``round``; client-scope values must name the client."""
        _check_choice("scope", scope, METRIC_SCOPES)
        if (scope == "client") != (client_id is not None):
            raise StoreError("client metrics need a client_id and server metrics must not have one")
        now = utcnow()
        round = _check_int("round", round, maximum=_INT32_MAX)
        client_id = None if client_id is None else _check_name("client_id", client_id)
        base = {"run_id": run_id, "round": round, "scope": scope, "client_id": client_id}
        rows = [
            {**base, "name": _check_name("metric name", k), "value": float(v), "created_at": now}
            for k, v in metrics.items()
        ]
        if not rows:
            return
        with self._session(f"record metrics of run {run_id} round {round}", run_id=run_id) as session:
            session.execute(insert(MetricRow), rows)

    def record_rejection(self, run_id: str, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        """Record an update or request the server refused, with its machine code and reason.

        ``client_id`` and ``reason`` may come from the refused request itself, so they are
        kept rather than validated: NUL characters are escaped and an over-long client id
        is cut to its column's 200 characters (ending in ``...``).
        """
        row = RejectionRow(
            run_id=run_id,
            round=None if round is None else _check_int("round", round, maximum=_INT32_MAX),
            client_id=None if client_id is None else _printable(str(client_id), _MAX_NAME_LENGTH),
            code=_check_name("code", code, _MAX_CODE_LENGTH),
            reason=_printable(str(reason)),
            created_at=utcnow(),
        )
        with self._session(f"record a rejection in run {run_id}", run_id=run_id) as session:
            session.add(row)

    # ----------------------------------------------------------------- join tokens

    def create_token(self, name: str, role: str = "agent", max_agents: int = DEFAULT_MAX_AGENTS) -> str:
        """Issue a join token and return its text (``flj_…``), which is never stored and never shown again.

        At most one token of a name is active at a time; a revoked token's name can be reused.
        ``max_agents`` bounds the distinct agent names that may register with it.
        """
        _check_slug("token name", name)
        _check_choice("role", role, ROLES)
        limit = _check_int("max_agents", max_agents, minimum=1, maximum=_INT32_MAX)
        token = JOIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = TokenRow(name=name, sha256=_digest(token), role=role, created_at=utcnow(), max_agents=limit)
        conflict = f"a token named {name!r} is already active: revoke it first (`fedloom token revoke --name {name}`)"
        # the partial unique index on active names refuses a twin, concurrent or not; no read
        # first, so SQLite takes its write lock at once (waits, instead of a stale-snapshot error)
        with self._session(f"create token {name!r}", conflict=conflict) as session:
            session.add(row)
        return token

    def revoke_token(self, name: str) -> None:
        """Revoke the active token of this name; agents that registered with it can no longer authenticate."""
        active = (TokenRow.name == name, TokenRow.revoked_at.is_(None))
        with self._session(f"revoke token {name!r}") as session:
            if _rowcount(session, update(TokenRow).where(*active).values(revoked_at=utcnow())) == 0:
                known = session.scalar(select(func.count()).select_from(TokenRow).where(TokenRow.name == name))
                if known:
                    raise StoreError(f"token {name!r} is already revoked")
                raise StoreError(f"no token named {name!r} (see `fedloom token list`)")

    def list_tokens(self) -> list[TokenRecord]:
        """Every token ever issued, revoked ones included, oldest first (no secrets, no hashes),
        each with how many distinct agent names it has registered."""
        with self._session("list tokens") as session:
            used = usage_by_token(session)
            rows = session.scalars(select(TokenRow).order_by(TokenRow.id))
            return [dataclasses.replace(_token_record(r), used=used.get(r.id, 0)) for r in rows]

    def verify_join_token(self, token: str) -> TokenRecord | None:
        """The active token with this text, or None (unknown, revoked, or not a token at all)."""
        digest = _secret_digest(token, JOIN_TOKEN_PREFIX)
        if digest is None:
            return None
        with self._session("verify a join token") as session:
            row = session.scalars(select(TokenRow).where(TokenRow.sha256 == digest)).first()
            if row is None or row.revoked_at is not None or not hmac.compare_digest(row.sha256, digest):
                return None
            return _token_record(row)

    # ----------------------------------------------------------------- agents

    def register_agent(self, run_id: str, name: str, token: TokenRecord) -> tuple[AgentRecord, str]:
        """Register agent ``name`` in the run and return it with a fresh credential (``fla_…``).

        Registering the same name again with a token of the same name keeps the agent id
        and its role and replaces the credential (the old one stops working). The rules of
        :mod:`fedloom.store.registration` refuse (``RegistrationRefusedError``, nothing
        written) a name bound to another token, a token over its agent limit, a revoked token.
        """
        _check_slug("agent name", name)
        credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(credential)
        action = f"register agent {name!r} in run {run_id}"
        for attempt in (1, 2):
            try:
                with self._session(action, run_id=run_id) as session:
                    row = write_agent(session, run_id, name, token, digest, utcnow())
                    return _agent_record(row), credential
            except StoreError as exc:
                # two first registrations of one name raced: the loser's insert hit the unique
                # constraint; its second attempt updates the winner's row instead
                raced = isinstance(exc.__cause__, sa_exc.IntegrityError) and self._agent_id(run_id, name) is not None
                if attempt == 2 or not raced:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def revoked_agent_ids(self, run_id: str) -> set[str]:
        """The run's agents whose token is revoked (``fedloom token revoke``, maybe from another process)."""
        with self._session(f"list revoked agents of run {run_id}") as session:
            return revoked_agent_ids(session, run_id)

    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers a trivial query (``GET /v1/health``)."""
        with self._session("reach the database") as session:
            session.execute(select(1))

    def _agent_id(self, run_id: str, name: str) -> str | None:
        with self._session("look up an agent") as session:
            return session.scalar(select(AgentRow.id).where(AgentRow.run_id == run_id, AgentRow.name == name))

    def authenticate(self, credential: str) -> AgentRecord | None:
        """The agent holding this credential, or None if it is unknown, replaced, or its token revoked.

        Refreshes ``last_seen_at`` at most once per :attr:`last_seen_interval` seconds per agent.
        """
        digest = _secret_digest(credential, CREDENTIAL_PREFIX)
        if digest is None:
            return None
        stmt = (
            select(AgentRow, TokenRow.revoked_at)
            .join(TokenRow, AgentRow.token_id == TokenRow.id)
            .where(AgentRow.credential_sha256 == digest)
        )
        with self._session("authenticate an agent") as session:
            found = session.execute(stmt).first()
            if found is None:
                return None
            row, revoked_at = found
            if revoked_at is not None or not hmac.compare_digest(row.credential_sha256, digest):
                return None
            record = _agent_record(row)
        now = utcnow()
        seen = record.last_seen_at
        if seen is not None and (now - seen).total_seconds() < self.last_seen_interval:
            return record
        cutoff = now - timedelta(seconds=self.last_seen_interval)  # concurrent requests write once
        stale = or_(AgentRow.last_seen_at.is_(None), AgentRow.last_seen_at <= cutoff)
        with self._session(f"record that agent {record.id} was seen") as session:
            session.execute(update(AgentRow).where(AgentRow.id == record.id, stale).values(last_seen_at=now))
        return dataclasses.replace(record, last_seen_at=now)

    def list_agents(self, run_id: str) -> list[AgentRecord]:
        """The run's agents in registration order (empty for an unknown run)."""
        stmt = select(AgentRow).where(AgentRow.run_id == run_id).order_by(AgentRow.created_at, AgentRow.name)
        with self._session(f"list agents of run {run_id}") as session:
            return [_agent_record(r) for r in session.scalars(stmt)]

    def get_agent(self, agent_id: str) -> AgentRecord:
        """The agent with this id; an unknown id is a ``StoreError``."""
        with self._session(f"look up agent {agent_id}") as session:
            row = session.get(AgentRow, agent_id)
            if row is None:
                raise StoreError(f"no agent with id {agent_id!r}")
            return _agent_record(row)

    # ----------------------------------------------------------------- readers

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id, or with the only id starting with it (like a git hash)."""
        ref = str(run_id).strip().lower()
        if not _HEX_PREFIX.fullmatch(ref):
            raise StoreError(f"invalid run id {run_id!r}: expected up to 32 hex characters")
        with self._session(f"look up run {run_id}") as session:
            rows = session.scalars(select(RunRow).where(RunRow.id.startswith(ref)).order_by(RunRow.id).limit(6)).all()
            records = [_run_record(r) for r in rows]
        exact = [r for r in records if r.id == ref]
        if exact or len(records) == 1:
            return (exact or records)[0]
        if not records:
            raise StoreError(f"no run with id {run_id!r} (see `fedloom runs list`)")
        shown = ", ".join(r.short_id for r in records[:5])
        raise StoreError(f"run id {run_id!r} is ambiguous: it starts {shown}{', ...' if len(records) > 5 else ''}")

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        """The ``limit`` most recent runs, newest first."""
        stmt = select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id).limit(limit)
        with self._session("list runs") as session:
            return [_run_record(r) for r in session.scalars(stmt)]

    def list_clients(self, run_id: str) -> list[ClientRecord]:
        """The run's registered clients in registration order (what a restarted aggregator re-admits)."""
        stmt = select(ClientRow).where(ClientRow.run_id == run_id).order_by(ClientRow.id)
        with self._session(f"list clients of run {run_id}") as session:
            return [_client_record(r) for r in session.scalars(stmt)]

    def list_rounds(self, run_id: str) -> list[RoundRecord]:
        """Every round of the run in round order (empty for an unknown run)."""
        stmt = select(RoundRow).where(RoundRow.run_id == run_id).order_by(RoundRow.round)
        with self._session(f"list rounds of run {run_id}") as session:
            return [_round_record(r) for r in session.scalars(stmt)]

    def list_global_models(self, run_id: str) -> list[ModelRecord]:
        """Every global model of the run in round order."""
        stmt = select(GlobalModelRow).where(GlobalModelRow.run_id == run_id).order_by(GlobalModelRow.round)
        with self._session(f"list global models of run {run_id}") as session:
            return [_global_record(r) for r in session.scalars(stmt)]

    def latest_global_model(self, run_id: str) -> ModelRecord | None:
        """The global model of the highest round, where a resumed run starts from."""
        stmt = select(GlobalModelRow).where(GlobalModelRow.run_id == run_id).order_by(GlobalModelRow.round.desc())
        with self._session(f"find the latest global model of run {run_id}") as session:
            row = session.scalars(stmt.limit(1)).first()
            return None if row is None else _global_record(row)

    def load_global_model(self, run_id: str, round: int) -> Weights:
        """The weights of a round's global model, verified against the stored content hash."""
        where = (GlobalModelRow.run_id == run_id, GlobalModelRow.round == round)
        with self._session(f"load the global model of run {run_id} round {round}") as session:
            row = session.scalars(select(GlobalModelRow).where(*where)).first()
            record = None if row is None else _global_record(row)
        if record is None:
            raise StoreError(f"run {run_id} has no global model for round {round}")
        return self._load(record)

    def list_local_models(self, run_id: str, round: int | None = None) -> list[ModelRecord]:
        """The run's local models (of one round if given), by round then client id."""
        stmt = select(LocalModelRow).where(LocalModelRow.run_id == run_id)
        if round is not None:
            stmt = stmt.where(LocalModelRow.round == round)
        stmt = stmt.order_by(LocalModelRow.round, LocalModelRow.client_id)
        with self._session(f"list local models of run {run_id}") as session:
            return [_local_record(r) for r in session.scalars(stmt)]

    def load_local_model(self, run_id: str, round: int, client_id: str) -> Weights:
        """A client's stored update, e.g. to rebuild a round's aggregate after a restart."""
        where = (LocalModelRow.run_id == run_id, LocalModelRow.round == round, LocalModelRow.client_id == client_id)
        with self._session(f"load the local model of client {client_id!r}") as session:
            row = session.scalars(select(LocalModelRow).where(*where)).first()
            record = None if row is None else _local_record(row)
        if record is None:
            raise StoreError(f"run {run_id} has no local model of client {client_id!r} in round {round}")
        return self._load(record)

    def load_local_models(self, run_id: str, round: int) -> list[tuple[ModelRecord, Weights]]:
        """Every stored local model of a round with its weights, by client id: what a restarted
        aggregator folds back into the open round (records carry ``num_samples`` and ``metrics``).

        A local model recorded without its blob cannot be re-aggregated and raises ``StoreError``.
        """
        return [(record, self._load(record)) for record in self.list_local_models(run_id, round=round)]

    def _load(self, record: ModelRecord) -> Weights:
        """Read, parse and verify a model's blob; a hash mismatch raises ``IntegrityError``."""
        what = f"model {record.id} (run {record.run_id}, round {record.round})"
        if record.blob_key is None or self._blobs is None:
            raise StoreError(f"{what} was recorded without its weights (no blob kept)")
        weights, header = from_bytes(self._blobs.get(record.blob_key))
        if header.sha256 != record.sha256:
            raise IntegrityError(f"{what}: blob holds tensors hashing to {header.sha256}, row says {record.sha256}")
        return weights

    def metrics(self, run_id: str, scope: str | None = None) -> list[MetricRecord]:
        """Every metric of the run (of one scope if given), in round then recording order."""
        stmt = select(MetricRow).where(MetricRow.run_id == run_id)
        if scope is not None:
            stmt = stmt.where(MetricRow.scope == _check_choice("scope", scope, METRIC_SCOPES))
        with self._session(f"read metrics of run {run_id}") as session:
            return [_metric_record(r) for r in session.scalars(stmt.order_by(MetricRow.round, MetricRow.id))]

    def metric_series(self, run_id: str, name: str, scope: str = "server") -> list[tuple[int, float]]:
        """``(round, value)`` pairs of one metric, in round order (all clients' for client scope)."""
        stmt = select(MetricRow.round, MetricRow.value).where(
            MetricRow.run_id == run_id,
            MetricRow.scope == _check_choice("scope", scope, METRIC_SCOPES),
            MetricRow.name == name,
        )
        with self._session(f"read metric {name!r} of run {run_id}") as session:
            return [(int(r), float(v)) for r, v in session.execute(stmt.order_by(MetricRow.round, MetricRow.id))]

    def list_rejections(self, run_id: str) -> list[RejectionRecord]:
        """Every rejection of the run, oldest first."""
        stmt = select(RejectionRow).where(RejectionRow.run_id == run_id).order_by(RejectionRow.id)
        with self._session(f"list rejections of run {run_id}") as session:
            return [_rejection_record(r) for r in session.scalars(stmt)]


# --------------------------------------------------------------------- engine


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


def _rowcount(session: Session, statement: Update) -> int:
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


def _reason(exc: sa_exc.SQLAlchemyError) -> str:
    """The driver's message without SQLAlchemy's multi-line statement dump."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------- validation


def _check_choice(field: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise StoreError(f"{field} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _check_int(field: str, value: int, minimum: int | None = 0, maximum: int = _INT64_MAX) -> int:
    """Accept ints and NumPy integers (via ``__index__``); refuse bools, floats and strings.

    The range is the column's (64-bit by default, ``_INT32_MAX`` for rounds and counts):
    PostgreSQL refuses a larger value and SQLite overflows, so both get the same error.
    """
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool):
        raise StoreError(f"{field} must be an integer, got {value!r}")
    low = -_INT64_MAX - 1 if minimum is None else minimum
    if number < low:
        raise StoreError(f"{field} must be >= {low}, got {number}")
    if number > maximum:
        raise StoreError(f"{field} must be <= {maximum}, got {number}")
    return number


def _check_text(field: str, value: str, max_length: int = _MAX_NAME_LENGTH) -> str:
    """Text for a length-limited column: PostgreSQL enforces the limit and refuses NUL, SQLite neither."""
    if len(value) > max_length:
        raise StoreError(f"{field} must be at most {max_length} characters, got {len(value)}: {value[:40]!r}...")
    if "\x00" in value:
        raise StoreError(f"{field} must not contain NUL characters, got {value!r}")
    return value


def _check_name(field: str, value: str, max_length: int = _MAX_NAME_LENGTH) -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{field} must be a non-empty string, got {value!r}")
    return _check_text(field, value, max_length)


def _printable(value: str, max_length: int | None = None) -> str:
    """Untrusted text kept as a record: NUL made visible, cut to ``max_length`` (marked with ``...``)."""
    value = value.replace("\x00", "\\x00")
    if max_length is not None and len(value) > max_length:
        value = value[: max_length - 3] + "..."
    return value


def _check_slug(field: str, value: str) -> str:
    """Token and agent names: 1-64 characters of letters, digits, ``.``, ``_`` and ``-``."""
    if not isinstance(value, str) or not _NAME_PATTERN.fullmatch(value):
        raise StoreError(f"{field} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', got {value!r}")
    return value


def _digest(secret: str) -> str:
    """What the store keeps of a secret: its SHA-256, as lowercase hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _secret_digest(secret: object, prefix: str) -> str | None:
    """The digest of a presented secret, or None when it cannot be one of ours (no query needed)."""
    if not isinstance(secret, str) or len(secret) > _MAX_SECRET_LENGTH:
        return None
    if not secret.startswith(prefix) or not secret.isascii():
        return None
    return _digest(secret)


def _plain_json(value: Any) -> Any:
    """Round-trip through JSON so NumPy scalars, paths and tuples become plain JSON values."""
    return json.loads(dump_json(value))


def _local_hash(weights: Weights | None, sha256: str | None) -> str:
    """The content hash of a local model: computed from ``weights``, checked against ``sha256``."""
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise StoreError(f"sha256 must be 64 lowercase hex characters, got {sha256!r}")
    if weights is None:
        if sha256 is None:
            raise StoreError("a local model needs its weights or at least their sha256")
        return sha256
    check_structure(weights)
    actual = content_hash(weights)
    if sha256 is not None and sha256 != actual:
        raise IntegrityError(f"local model sha256 {sha256} does not match its weights, which hash to {actual}")
    return actual


def _client_row(
    run_id: str, client_id: str, num_samples: int | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "client_id": _check_name("client_id", client_id),
        "num_samples": None if num_samples is None else _check_int("num_samples", num_samples),
        "created_at": utcnow(),
        "extra": None if extra is None else _plain_json(dict(extra)),
    }


# --------------------------------------------------------------------- row -> record


def _run_record(row: RunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        name=row.name,
        kind=row.kind,
        status=row.status,
        seed=row.seed,
        config=row.config,
        created_at=row.created_at,
        finished_at=row.finished_at,
        summary=row.summary,
    )


def _client_record(row: ClientRow) -> ClientRecord:
    return ClientRecord(
        run_id=row.run_id,
        client_id=row.client_id,
        num_samples=row.num_samples,
        created_at=row.created_at,
        extra=row.extra,
    )


def _round_record(row: RoundRow) -> RoundRecord:
    return RoundRecord(
        run_id=row.run_id,
        round=row.round,
        status=row.status,
        selected=tuple(row.selected),
        opened_at=row.opened_at,
        closed_at=row.closed_at,
        num_updates=row.num_updates,
        num_samples=row.num_samples,
    )


def _global_record(row: GlobalModelRow) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        run_id=row.run_id,
        round=row.round,
        num_samples=row.num_samples,
        sha256=row.sha256,
        blob_key=row.blob_key,
        created_at=row.created_at,
    )


def _local_record(row: LocalModelRow) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        run_id=row.run_id,
        round=row.round,
        num_samples=row.num_samples,
        sha256=row.sha256,
        blob_key=row.blob_key,
        created_at=row.created_at,
        client_id=row.client_id,
        metrics=dict(row.metrics),
    )


def _metric_record(row: MetricRow) -> MetricRecord:
    return MetricRecord(
        run_id=row.run_id,
        round=row.round,
        scope=row.scope,
        name=row.name,
        value=row.value,
        created_at=row.created_at,
        client_id=row.client_id,
    )


def _token_record(row: TokenRow) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        max_agents=row.max_agents,
    )


def _agent_record(row: AgentRow) -> AgentRecord:
    return AgentRecord(
        id=row.id,
        run_id=row.run_id,
        name=row.name,
        role=row.role,
        token_id=row.token_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
    )


def _rejection_record(row: RejectionRow) -> RejectionRecord:
    return RejectionRecord(
        id=row.id,
        run_id=row.run_id,
        round=row.round,
        client_id=row.client_id,
        code=row.code,
        reason=row.reason,
        created_at=row.created_at,
    )
