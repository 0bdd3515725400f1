"""Schema version 7: the ``cluster_models`` table (several aggregators, one federation).

Kept apart from :mod:`fedloom.store.schema` (which imports :func:`to_v7`) so that file stays
under its size limit; the frozen table here is what version 7 creates, whatever
:class:`fedloom.store.cluster_models.ClusterModelRow` becomes later. Runs recorded before
it have no cluster models: they were never part of a federation.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from fedloom.store.types import JsonText, UtcDateTime


def cluster_models_v7(metadata: MetaData) -> Table:
    """``cluster_models`` exactly as schema version 7 defines it."""
    return Table(
        "cluster_models",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("federation", String(64), nullable=False),
        Column("cluster", String(64), nullable=False),
        Column("round", Integer, nullable=False),
        Column("num_samples", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("blob_key", String(64), nullable=True),
        Column("peers", JsonText, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        UniqueConstraint("run_id", "round", name="uq_cluster_models_run_round"),
        Index("ix_cluster_models_federation_round", "federation", "round"),
    )


def to_v7(conn: Connection) -> None:
    """Version 7: ``cluster_models`` (a new table only)."""
    metadata = MetaData()
    Table("runs", metadata, Column("id", String(32), primary_key=True))  # only to resolve the foreign key
    cluster_models_v7(metadata).create(conn)
