"""Schema version 6: the lineage columns of ``global_models`` (``lineage_sha256``, ``config_sha256``).

Kept apart from :mod:`fedloom.store.schema` (which imports :func:`to_v6`) so that file stays
under its size limit; the frozen columns here are what version 6 adds, whatever
:class:`fedloom.store.schema.GlobalModelRow` becomes later. Rows recorded before it keep
NULL and ``fedloom models verify`` reports them as unchained.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, MetaData, String, Table, text
from sqlalchemy.schema import CreateColumn

#: the columns version 6 adds, in order
LINEAGE_COLUMNS = ("lineage_sha256", "config_sha256")


def to_v6(conn: Connection) -> None:
    """Version 6: nullable ``global_models.lineage_sha256`` and ``global_models.config_sha256``.

    Rendered by SQLAlchemy's own DDL compiler, so the altered table is exactly what a fresh
    ``CREATE TABLE`` makes (SQLite keeps the DDL text verbatim).
    """
    columns = [Column(name, String(64), nullable=True) for name in LINEAGE_COLUMNS]
    Table("global_models", MetaData(), *columns)
    for column in columns:
        ddl = CreateColumn(column).compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE global_models ADD COLUMN {ddl}"))
