"""Bounded reads for the web dashboard: the ``DashboardQueriesMixin`` part of :class:`fedloom.store.SqlStore`.

The dashboard polls a live run every few seconds, and a run may have thousands of
clients and rounds: every read here selects only the columns it needs and takes a
``limit``, so one page never loads a whole run's history into memory. Counts come back
with the rows so the dashboard can say when it cut a list short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import defer

from fedloom.core.errors import StoreError
from fedloom.core.records import METRIC_SCOPES, MetricRecord, RoundRecord, RunRecord
from fedloom.store.checks import check_choice
from fedloom.store.connection import SqlCore
from fedloom.store.row_records import metric_record, round_record
from fedloom.store.schema import (
    AgentRow,
    ClientRow,
    GlobalModelRow,
    LocalModelRow,
    MetricRow,
    RejectionRow,
    RoundRow,
)

#: the server-scope metric the runs list ranks by
ACCURACY = "accuracy"


class DashboardQueriesMixin(SqlCore):
    """Column-only, limited reads the dashboard's JSON API is built from (all read-only)."""

    def run_progress(self, runs: Sequence[RunRecord]) -> dict[str, tuple[int, float | None]]:
        """For each run: rounds closed so far and the best server ``accuracy`` (None when none was measured)."""
        ids = [r.id for r in runs]
        if not ids:
            return {}
        closed = (
            select(RoundRow.run_id, func.count())
            .where(RoundRow.run_id.in_(ids), RoundRow.status == "closed")
            .group_by(RoundRow.run_id)
        )
        best = (
            select(MetricRow.run_id, func.max(MetricRow.value))
            .where(MetricRow.run_id.in_(ids), MetricRow.scope == "server", MetricRow.name == ACCURACY)
            .group_by(MetricRow.run_id)
        )
        with self._session("summarise runs for the dashboard") as session:
            done = {str(run): int(n) for run, n in session.execute(closed)}
            top = {str(run): None if v is None else float(v) for run, v in session.execute(best)}
        return {i: (done.get(i, 0), top.get(i)) for i in ids}

    def recent_rounds(self, run_id: str, last: int, with_selected: bool) -> tuple[list[RoundRecord], int]:
        """The ``last`` most recent rounds in round order, and how many the run has.

        Without ``with_selected`` the selected lists (one id per selected client: the large
        part of a round of a big run) are not read, and the records' ``selected`` is empty.
        """
        where = RoundRow.run_id == run_id
        stmt = select(RoundRow).where(where).order_by(RoundRow.round.desc()).limit(last)
        if not with_selected:
            stmt = stmt.options(defer(RoundRow.selected))
        with self._session(f"read recent rounds of run {run_id}") as session:
            total = int(session.scalar(select(func.count()).select_from(RoundRow).where(where)) or 0)
            rows = list(session.scalars(stmt))
            records = [round_record(r) if with_selected else _without_selected(r) for r in reversed(rows)]
        return records, total

    def client_ids_page(self, run_id: str, limit: int) -> tuple[list[str], int]:
        """The first ``limit`` clients of the run (registration order) and how many it has in all."""
        where = ClientRow.run_id == run_id
        with self._session(f"list clients of run {run_id} for the dashboard") as session:
            total = int(session.scalar(select(func.count()).select_from(ClientRow).where(where)) or 0)
            ids = list(session.scalars(select(ClientRow.client_id).where(where).order_by(ClientRow.id).limit(limit)))
        return [str(i) for i in ids], total

    def contributions(self, run_id: str, client_ids: Sequence[str], rounds: tuple[int, int]) -> set[tuple[int, str]]:
        """``(round, client)`` pairs with an accepted local model, for these clients in ``rounds`` (inclusive)."""
        if not client_ids:
            return set()
        stmt = select(LocalModelRow.round, LocalModelRow.client_id).where(
            LocalModelRow.run_id == run_id,
            LocalModelRow.client_id.in_(list(client_ids)),
            LocalModelRow.round.between(*rounds),
        )
        with self._session(f"read contributions of run {run_id}") as session:
            return {(int(r), str(c)) for r, c in session.execute(stmt)}

    def refusals(self, run_id: str, client_ids: Sequence[str], rounds: tuple[int, int]) -> set[tuple[int, str]]:
        """``(round, client)`` pairs with a recorded rejection, for these clients in ``rounds`` (inclusive)."""
        if not client_ids:
            return set()
        stmt = select(RejectionRow.round, RejectionRow.client_id).where(
            RejectionRow.run_id == run_id,
            RejectionRow.client_id.in_(list(client_ids)),
            RejectionRow.round.between(*rounds),
        )
        with self._session(f"read refusals of run {run_id}") as session:
            return {(int(r), str(c)) for r, c in session.execute(stmt) if r is not None}

    def metrics_page(
        self, run_id: str, scope: str, limit: int, offset: int = 0, newest: bool = False
    ) -> tuple[list[MetricRecord], int]:
        """One page of the run's metrics of one scope (round then recording order) and their total count.

        With ``newest`` the page counts from the end (``offset`` rows before the last), still
        in round order: what a live view of a long run wants.
        """
        check_choice("scope", scope, METRIC_SCOPES)
        where = (MetricRow.run_id == run_id, MetricRow.scope == scope)
        order = (MetricRow.round.desc(), MetricRow.id.desc()) if newest else (MetricRow.round, MetricRow.id)
        stmt = select(MetricRow).where(*where).order_by(*order).offset(offset).limit(limit)
        with self._session(f"read {scope} metrics of run {run_id}") as session:
            total = int(session.scalar(select(func.count()).select_from(MetricRow).where(*where)) or 0)
            records = [metric_record(r) for r in session.scalars(stmt)]
        return (records[::-1] if newest else records), total

    def rejections_page(self, run_id: str, limit: int, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page of the run's rejections, newest first, and their total count."""
        where = RejectionRow.run_id == run_id
        cols = (RejectionRow.round, RejectionRow.client_id, RejectionRow.code, RejectionRow.reason)
        stmt = select(*cols, RejectionRow.created_at).where(where).order_by(RejectionRow.id.desc())
        with self._session(f"read rejections of run {run_id}") as session:
            total = int(session.scalar(select(func.count()).select_from(RejectionRow).where(where)) or 0)
            rows = session.execute(stmt.offset(offset).limit(limit)).all()
        keys = ("round", "client_id", "code", "reason", "created_at")
        return [dict(zip(keys, row, strict=True)) for row in rows], total

    def global_model_blob(self, run_id: str, round: int) -> tuple[bytes, str]:
        """The stored safetensors bytes of a round's global model, exactly as kept, and its content hash."""
        where = (GlobalModelRow.run_id == run_id, GlobalModelRow.round == round)
        with self._session(f"find the global model of run {run_id} round {round}") as session:
            found = session.execute(select(GlobalModelRow.blob_key, GlobalModelRow.sha256).where(*where)).first()
        if found is None:
            raise StoreError(f"run {run_id} has no global model for round {round}")
        key, sha256 = found
        if key is None or self._blobs is None:
            raise StoreError(f"the global model of run {run_id} round {round} was recorded without its weights")
        return self._blobs.get(str(key)), str(sha256)

    def agent_activity(self, run_id: str) -> dict[str, tuple[int, int]]:
        """Per agent id of the run: rounds it contributed to, and rejections recorded against it."""
        ids = select(AgentRow.id).where(AgentRow.run_id == run_id).scalar_subquery()
        joined = (
            select(LocalModelRow.client_id, func.count(distinct(LocalModelRow.round)))
            .where(LocalModelRow.run_id == run_id, LocalModelRow.client_id.in_(ids))
            .group_by(LocalModelRow.client_id)
        )
        refused = (
            select(RejectionRow.client_id, func.count())
            .where(RejectionRow.run_id == run_id, RejectionRow.client_id.in_(ids))
            .group_by(RejectionRow.client_id)
        )
        with self._session(f"read agent activity of run {run_id}") as session:
            rounds = {str(c): int(n) for c, n in session.execute(joined)}
            refusals = {str(c): int(n) for c, n in session.execute(refused)}
        return {c: (rounds.get(c, 0), refusals.get(c, 0)) for c in set(rounds) | set(refusals)}


def _without_selected(row: RoundRow) -> RoundRecord:
    """A round's record from a row whose ``selected`` list was not loaded (left empty)."""
    return RoundRecord(
        run_id=row.run_id,
        round=row.round,
        status=row.status,
        selected=(),
        opened_at=row.opened_at,
        closed_at=row.closed_at,
        num_updates=row.num_updates,
        num_samples=row.num_samples,
    )
