"""Metrics and rejections: what a run measured and what it refused (the ``MetricsMixin`` part).

Failures are data: every refused update or request is kept with its code and reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from fedloom.core.errors import StoreError
from fedloom.core.records import METRIC_SCOPES, MetricRecord, RejectionRecord
from fedloom.store.checks import (
    INT32_MAX,
    MAX_CODE_LENGTH,
    MAX_NAME_LENGTH,
    check_choice,
    check_int,
    check_name,
    printable,
)
from fedloom.store.connection import SqlCore
from fedloom.store.row_records import metric_record, rejection_record
from fedloom.store.schema import MetricRow, RejectionRow
from fedloom.store.types import utcnow


class MetricsMixin(SqlCore):
    """Record and read metrics (server or client scope) and rejections."""

    def record_metrics(
        self,
        run_id: str,
        round: int,
        metrics: Mapping[str, float],
        scope: str = "server",
        client_id: str | None = None,
    ) -> None:
        """Record named values measured in ``round``; client- and system-scope values must name the party."""
        rows = _metric_rows(run_id, round, scope, client_id, metrics, utcnow())
        if not rows:
            return
        with self._session(f"record metrics of run {run_id} round {round}", run_id=run_id) as session:
            session.execute(insert(MetricRow), rows)

    def record_party_metrics(
        self, run_id: str, round: int, scope: str, by_party: Mapping[str, Mapping[str, float]]
    ) -> None:
        """Record many parties' values of one round and scope (client id -> metrics) in one write:
        a simulated round's clients would otherwise cost one transaction each."""
        now = utcnow()
        rows = [
            row for party, values in by_party.items() for row in _metric_rows(run_id, round, scope, party, values, now)
        ]
        if not rows:
            return
        with self._session(f"record {scope} metrics of run {run_id} round {round}", run_id=run_id) as session:
            session.execute(insert(MetricRow), rows)

    def record_rejection(self, run_id: str, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        """Record an update or request the server refused, with its machine code and reason.

        ``client_id`` and ``reason`` may come from the refused request itself, so they are
        kept rather than validated: NUL characters are escaped and an over-long client id
        is cut to its column's 200 characters (ending in ``...``).
        """
        row = RejectionRow(
            run_id=run_id,
            round=None if round is None else check_int("round", round, maximum=INT32_MAX),
            client_id=None if client_id is None else printable(str(client_id), MAX_NAME_LENGTH),
            code=check_name("code", code, MAX_CODE_LENGTH),
            reason=printable(str(reason)),
            created_at=utcnow(),
        )
        with self._session(f"record a rejection in run {run_id}", run_id=run_id) as session:
            session.add(row)

    def metrics(self, run_id: str, scope: str | None = None) -> list[MetricRecord]:
        """Every metric of the run (of one scope if given), in round then recording order."""
        stmt = select(MetricRow).where(MetricRow.run_id == run_id)
        if scope is not None:
            stmt = stmt.where(MetricRow.scope == check_choice("scope", scope, METRIC_SCOPES))
        with self._session(f"read metrics of run {run_id}") as session:
            return [metric_record(r) for r in session.scalars(stmt.order_by(MetricRow.round, MetricRow.id))]

    def metric_series(self, run_id: str, name: str, scope: str = "server") -> list[tuple[int, float]]:
        """``(round, value)`` pairs of one metric, in round order (all clients' for client scope)."""
        stmt = select(MetricRow.round, MetricRow.value).where(
            MetricRow.run_id == run_id,
            MetricRow.scope == check_choice("scope", scope, METRIC_SCOPES),
            MetricRow.name == name,
        )
        with self._session(f"read metric {name!r} of run {run_id}") as session:
            return [(int(r), float(v)) for r, v in session.execute(stmt.order_by(MetricRow.round, MetricRow.id))]

    def list_rejections(self, run_id: str) -> list[RejectionRecord]:
        """Every rejection of the run, oldest first."""
        stmt = select(RejectionRow).where(RejectionRow.run_id == run_id).order_by(RejectionRow.id)
        with self._session(f"list rejections of run {run_id}") as session:
            return [rejection_record(r) for r in session.scalars(stmt)]


def _metric_rows(
    run_id: str, round: int, scope: str, client_id: str | None, metrics: Mapping[str, float], now: datetime
) -> list[dict[str, Any]]:
    """The checked rows of one party's metrics (client- and system-scope values must name the party)."""
    check_choice("scope", scope, METRIC_SCOPES)
    if (scope != "server") != (client_id is not None):
        raise StoreError(f"{scope} metrics need a client_id and server metrics must not have one")
    round = check_int("round", round, maximum=INT32_MAX)
    client_id = None if client_id is None else check_name("client_id", client_id)
    base = {"run_id": run_id, "round": round, "scope": scope, "client_id": client_id}
    return [
        {**base, "name": check_name("metric name", k), "value": float(v), "created_at": now} for k, v in metrics.items()
    ]
