"""One round's records in one read, for the tracking sinks (the ``RoundReportsMixin`` part).

A tracking feed reads every closed round once; reading the whole run's metrics each time
would grow with the run, so these reads are bounded by the round.
"""

from __future__ import annotations

from sqlalchemy import select

from fedloom.core.errors import IntegrityError
from fedloom.core.records import MetricRecord, RejectionRecord, RoundRecord
from fedloom.core.serialization import from_bytes
from fedloom.store.connection import SqlCore
from fedloom.store.row_records import metric_record, rejection_record, round_record
from fedloom.store.schema import GlobalModelRow, MetricRow, RejectionRow, RoundRow


class RoundReportsMixin(SqlCore):
    """Reads bounded by one round: its row, its metrics, the rejections since; the last model's bytes."""

    def get_round(self, run_id: str, round: int) -> RoundRecord | None:
        """The round's row, or None when it was never opened."""
        where = (RoundRow.run_id == run_id, RoundRow.round == round)
        with self._session(f"read round {round} of run {run_id}") as session:
            row = session.scalars(select(RoundRow).where(*where)).first()
            return None if row is None else round_record(row)

    def round_metrics(self, run_id: str, round: int) -> list[MetricRecord]:
        """Every metric (any scope) recorded for one round, in recording order."""
        stmt = select(MetricRow).where(MetricRow.run_id == run_id, MetricRow.round == round).order_by(MetricRow.id)
        with self._session(f"read metrics of run {run_id} round {round}") as session:
            return [metric_record(r) for r in session.scalars(stmt)]

    def rejections_after(self, run_id: str, after_id: int) -> list[RejectionRecord]:
        """The run's rejections recorded after the one with id ``after_id`` (0: all), oldest first:
        what a watcher has not seen yet, whichever round each names."""
        stmt = select(RejectionRow).where(RejectionRow.run_id == run_id, RejectionRow.id > after_id)
        with self._session(f"read new rejections of run {run_id}") as session:
            return [rejection_record(r) for r in session.scalars(stmt.order_by(RejectionRow.id))]

    def latest_global_model_bytes(self, run_id: str) -> tuple[int, bytes] | None:
        """``(round, safetensors bytes)`` of the run's newest global model, verified against its
        stored hash; None when the run has no model kept with its blob."""
        stmt = select(GlobalModelRow).where(GlobalModelRow.run_id == run_id).order_by(GlobalModelRow.round.desc())
        with self._session(f"find the latest global model of run {run_id}") as session:
            row = session.scalars(stmt.limit(1)).first()
            found = None if row is None else (int(row.round), row.blob_key, row.sha256)
        if found is None or self._blobs is None:
            return None
        round, key, sha256 = found
        if key is None:
            return None
        data = self._blobs.get(key)
        _, header = from_bytes(data)
        if header.sha256 != sha256:
            raise IntegrityError(f"global model of run {run_id} round {round}: blob does not match its stored hash")
        return round, data
