"""Runs, their clients and their rounds: the ``RunsMixin`` part of :class:`fedloom.store.SqlStore`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from fedloom.core.errors import StoreError
from fedloom.core.records import RUN_KINDS, ClientRecord, RoundRecord, RunRecord
from fedloom.store.checks import INT32_MAX, check_choice, check_int, check_name, check_text, plain_json
from fedloom.store.connection import SqlCore, rowcount
from fedloom.store.row_records import client_record, round_record, run_record
from fedloom.store.schema import ClientRow, RoundRow, RunRow
from fedloom.store.types import utcnow

_FINAL_RUN_STATUSES = ("finished", "failed", "interrupted")
_FINAL_ROUND_STATUSES = ("closed", "abandoned")
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,32}")


class RunsMixin(SqlCore):
    """Create, finish, find and reopen runs; register clients; open and close rounds; read them back."""

    def create_run(self, name: str, kind: str, config: Mapping[str, Any], seed: int) -> str:
        """Start a run (status ``running``) and return its id (32 hex characters)."""
        check_choice("kind", kind, RUN_KINDS)
        row = RunRow(
            id=uuid.uuid4().hex,
            name=check_text("run name", str(name)),
            kind=kind,
            status="running",
            seed=check_int("seed", seed, minimum=None),
            config=plain_json(dict(config)),
            created_at=utcnow(),
        )
        with self._session(f"create run {name!r}") as session:
            session.add(row)
        return row.id

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """Mark a run ``finished``, ``failed`` or ``interrupted`` and keep its summary."""
        check_choice("status", status, _FINAL_RUN_STATUSES)
        values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
        if summary is not None:
            values["summary"] = plain_json(dict(summary))
        with self._session(f"finish run {run_id}") as session:
            if rowcount(session, update(RunRow).where(RunRow.id == run_id).values(**values)) == 0:
                raise StoreError(f"cannot finish run {run_id!r}: no such run")

    def find_run(self, name: str, kind: str = "deployment") -> RunRecord | None:
        """The newest run with this name and kind, or None: the run a restarted aggregator resumes."""
        check_choice("kind", kind, RUN_KINDS)
        stmt = (
            select(RunRow)
            .where(RunRow.name == name, RunRow.kind == kind)
            .order_by(RunRow.created_at.desc(), RunRow.id.desc())
            .limit(1)
        )
        with self._session(f"find run {name!r}") as session:
            row = session.scalars(stmt).first()
            return None if row is None else run_record(row)

    def reopen_run(self, run_id: str) -> None:
        """Set a run back to ``running`` and clear ``finished_at`` (its last summary is kept)."""
        values = {"status": "running", "finished_at": None}
        with self._session(f"reopen run {run_id}") as session:
            if rowcount(session, update(RunRow).where(RunRow.id == run_id).values(**values)) == 0:
                raise StoreError(f"cannot reopen run {run_id!r}: no such run")

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

    def open_round(self, run_id: str, round: int, selected: Sequence[str]) -> None:
        """Record that ``round`` started with the ``selected`` clients (once per round)."""
        row = RoundRow(
            run_id=run_id,
            round=check_int("round", round, maximum=INT32_MAX),
            status="open",
            selected=[check_name("client_id", c) for c in selected],
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
        check_choice("status", status, _FINAL_ROUND_STATUSES)
        values = {
            "status": status,
            "closed_at": utcnow(),
            "num_updates": check_int("num_updates", num_updates, maximum=INT32_MAX),
            "num_samples": check_int("num_samples", num_samples),
        }
        where = (RoundRow.run_id == run_id, RoundRow.round == round, RoundRow.status == "open")
        with self._session(f"close round {round} of run {run_id}") as session:
            if rowcount(session, update(RoundRow).where(*where).values(**values)) == 0:
                current = session.scalar(select(RoundRow.status).where(*where[:2]))
                state = "was never opened" if current is None else f"is already {current}"
                raise StoreError(f"cannot close round {round} of run {run_id}: it {state}")

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id, or with the only id starting with it (like a git hash)."""
        ref = str(run_id).strip().lower()
        if not _HEX_PREFIX.fullmatch(ref):
            raise StoreError(f"invalid run id {run_id!r}: expected up to 32 hex characters")
        with self._session(f"look up run {run_id}") as session:
            rows = session.scalars(select(RunRow).where(RunRow.id.startswith(ref)).order_by(RunRow.id).limit(6)).all()
            records = [run_record(r) for r in rows]
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
            return [run_record(r) for r in session.scalars(stmt)]

    def list_clients(self, run_id: str) -> list[ClientRecord]:
        """The run's registered clients in registration order (what a restarted aggregator re-admits)."""
        stmt = select(ClientRow).where(ClientRow.run_id == run_id).order_by(ClientRow.id)
        with self._session(f"list clients of run {run_id}") as session:
            return [client_record(r) for r in session.scalars(stmt)]

    def list_rounds(self, run_id: str) -> list[RoundRecord]:
        """Every round of the run in round order (empty for an unknown run)."""
        stmt = select(RoundRow).where(RoundRow.run_id == run_id).order_by(RoundRow.round)
        with self._session(f"list rounds of run {run_id}") as session:
            return [round_record(r) for r in session.scalars(stmt)]


def _client_row(
    run_id: str, client_id: str, num_samples: int | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "client_id": check_name("client_id", client_id),
        "num_samples": None if num_samples is None else check_int("num_samples", num_samples),
        "created_at": utcnow(),
        "extra": None if extra is None else plain_json(dict(extra)),
    }
