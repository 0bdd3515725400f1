"""Cluster models of a federation of aggregators: the ``ClusterModelsMixin`` part of :class:`fedloom.store.SqlStore`.

Each aggregator of a federation records, per closed round, the model its own agents
made (its cluster model), with the samples behind it and the peer models its
semi-global model used (:mod:`fedloom.core.federation`). The other aggregators read
those rows and blobs, and nothing else, of each other. A row is written once per run
and round: a second write of the same round (an aggregator that crashed after the first
and aggregated the round again) returns the stored row and writes nothing, so what the
peers may already have read never changes. Like a model, the blob is written before the
row that references it, and reads verify it against the row's hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from fedloom.core.errors import IntegrityError, StoreError
from fedloom.core.federation import ClusterModelRecord, PeerInput
from fedloom.core.serialization import content_hash, from_bytes, to_bytes
from fedloom.core.weights import Weights, check_structure
from fedloom.store.checks import INT32_MAX, check_int, check_name
from fedloom.store.connection import SqlCore
from fedloom.store.schema import Base, RunRow
from fedloom.store.types import JsonText, UtcDateTime, utcnow

#: the header's ``content`` value that marks a blob as a cluster model
_CONTENT = "cluster-model"


class ClusterModelRow(Base):
    """One cluster's model of one round, and the peer models its semi-global model was made from."""

    __tablename__ = "cluster_models"
    __table_args__ = (
        UniqueConstraint("run_id", "round", name="uq_cluster_models_run_round"),
        Index("ix_cluster_models_federation_round", "federation", "round"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    federation: Mapped[str] = mapped_column(String(64))
    cluster: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer)
    num_samples: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    peers: Mapped[Any] = mapped_column(JsonText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ClusterModelsMixin(SqlCore):
    """Record a cluster's model once per round; read the newest ones of a federation's clusters."""

    def save_cluster_model(
        self,
        run_id: str,
        federation: str,
        cluster: str,
        round: int,
        weights: Weights,
        num_samples: int,
        peers: Sequence[PeerInput],
    ) -> ClusterModelRecord:
        """Record the cluster model of ``round`` (blob first, then row), or return the one already recorded."""
        check_int("round", round, maximum=INT32_MAX)
        check_int("num_samples", num_samples, minimum=1)
        check_structure(weights)
        stored = self.cluster_model(run_id, round)
        if stored is not None:
            return stored
        key = self._put_blob(to_bytes(weights, round=round, num_samples=num_samples, extra={"content": _CONTENT}))
        row = ClusterModelRow(
            run_id=run_id,
            federation=check_name("federation", federation, max_length=64),
            cluster=check_name("cluster", cluster, max_length=64),
            round=round,
            num_samples=num_samples,
            sha256=content_hash(weights),
            blob_key=key,
            peers=[[p.cluster, p.round, p.num_samples, p.sha256] for p in peers],
            created_at=utcnow(),
        )
        conflict = f"run {run_id} already has a cluster model for round {round}"
        with self._session(f"save the cluster model of run {run_id} round {round}", run_id, conflict) as session:
            session.add(row)
            session.flush()
            return _record(row)

    def cluster_model(self, run_id: str, round: int) -> ClusterModelRecord | None:
        """The run's cluster model of ``round``, or None."""
        where = (ClusterModelRow.run_id == run_id, ClusterModelRow.round == round)
        with self._session(f"look up the cluster model of run {run_id} round {round}") as session:
            row = session.scalars(select(ClusterModelRow).where(*where)).first()
            return None if row is None else _record(row)

    def latest_cluster_models(
        self, federation: str, up_to_round: int, since: datetime, from_round: int = 0
    ) -> list[ClusterModelRecord]:
        """Per cluster, its newest cluster model of a round in ``[from_round, up_to_round]`` (from its newest
        run that had not finished before ``since``), in cluster order. ``from_round`` keeps the read to
        the rounds that can still count (one index range), however long the federation has run."""
        stmt = (
            select(ClusterModelRow)
            .join(RunRow, RunRow.id == ClusterModelRow.run_id)
            .where(
                ClusterModelRow.federation == federation,
                ClusterModelRow.round <= up_to_round,
                ClusterModelRow.round >= from_round,
                or_(RunRow.finished_at.is_(None), RunRow.finished_at >= since),
            )
            .order_by(RunRow.created_at.desc(), ClusterModelRow.round.desc())
        )
        newest: dict[str, ClusterModelRecord] = {}
        with self._session(f"read the cluster models of federation {federation!r}") as session:
            for row in session.scalars(stmt):
                newest.setdefault(row.cluster, _record(row))
        return [newest[cluster] for cluster in sorted(newest)]

    def load_cluster_model(self, record: ClusterModelRecord) -> Weights:
        """The weights of a cluster model; a blob that does not hash to the row's value raises ``IntegrityError``."""
        what = f"the cluster model of cluster {record.cluster!r} round {record.round}"
        if record.blob_key is None or self._blobs is None:
            raise StoreError(f"{what} was recorded without its weights (no blob store)")
        weights, header = from_bytes(self._blobs.get(record.blob_key))
        if header.sha256 != record.sha256:
            raise IntegrityError(f"{what}: blob holds tensors hashing to {header.sha256}, row says {record.sha256}")
        return weights


def _record(row: ClusterModelRow) -> ClusterModelRecord:
    peers = tuple(PeerInput(str(c), int(r), int(n), str(s)) for c, r, n, s in row.peers)
    return ClusterModelRecord(
        row.id,
        row.run_id,
        row.federation,
        row.cluster,
        row.round,
        row.num_samples,
        row.sha256,
        row.blob_key,
        peers,
        row.created_at,
    )
