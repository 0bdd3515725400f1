"""The verifiable lineage of a run: each global model row stores a link hashing the previous
link, the model, the local models it aggregated and the run's config (schema v6).

The ``LineageMixin`` part of :class:`fedloom.store.SqlStore`. :func:`lineage_columns` computes
the link inside the transaction that stores a global model, so a row never exists without
its link; :meth:`LineageMixin.verify_lineage` recomputes the chain from the stored rows and
blobs and names the first record that no longer matches. It proves the record was not
edited *after* it was written by someone who did not also recompute every later link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedloom.core.errors import IntegrityError, SerializationError, StoreError
from fedloom.core.lineage import LineageEntry, config_sha256, lineage_link
from fedloom.core.serialization import from_bytes
from fedloom.store.connection import SqlCore
from fedloom.store.schema import GlobalModelRow, LocalModelRow, RunRow


@dataclass(frozen=True)
class LineageMismatch:
    """The first stored record that does not match the chain: where, in which table, and what differs."""

    round: int
    table: str
    detail: str

    def __str__(self) -> str:
        return f"round {self.round}, table {self.table}: {self.detail}"


@dataclass(frozen=True)
class LineageReport:
    """What ``verify_lineage`` found: links checked, rounds recorded before lineage, the first mismatch."""

    run_id: str
    checked: int = 0
    unchained: tuple[int, ...] = ()
    mismatch: LineageMismatch | None = None
    blobs_checked: int = field(default=0)
    #: the last verified link: export it somewhere the database's writers cannot change
    last_link: str | None = None

    @property
    def ok(self) -> bool:
        """True when every chained record matches its stored link and every kept blob its row."""
        return self.mismatch is None


def _inputs(session: Session, row: GlobalModelRow) -> list[tuple[str, str, int]]:
    """The round's local models recorded up to the global model's own time: in an asynchronous run
    a local model numbered ``r`` (trained from version ``r``) arrives after version ``r`` was made,
    and the link must only commit to what existed when it was written."""
    where = (
        LocalModelRow.run_id == row.run_id,
        LocalModelRow.round == row.round,
        LocalModelRow.created_at <= row.created_at,
    )
    rows = session.execute(
        select(LocalModelRow.client_id, LocalModelRow.sha256, LocalModelRow.num_samples).where(*where)
    )
    return [(c, s, int(n)) for c, s, n in rows]


def lineage_columns(session: Session, row: GlobalModelRow) -> None:
    """Fill ``row.lineage_sha256`` and ``row.config_sha256`` from what the session sees now
    (the previous global model's link, the round's local models, the run's config)."""
    run = session.get(RunRow, row.run_id)
    if run is None:
        return  # the insert fails on its foreign key and is reported as an unknown run
    where = (GlobalModelRow.run_id == row.run_id, GlobalModelRow.round < row.round)
    previous = session.scalar(select(GlobalModelRow.lineage_sha256).where(*where).order_by(GlobalModelRow.round.desc()))
    row.config_sha256 = config_sha256(run.config)
    inputs = _inputs(session, row)
    row.lineage_sha256 = lineage_link(
        row.run_id, row.round, row.sha256, row.num_samples, previous, inputs, row.config_sha256
    )


class LineageMixin(SqlCore):
    """Recompute a run's lineage chain from the store and report the first record that differs."""

    def lineage_entry(self, run_id: str, round: int) -> LineageEntry | None:
        """The stored link of global model ``round`` with the fields it hashes, as agents are
        served it; None when there is no such model or it was recorded before lineage (v6)."""
        with self._session(f"read the lineage of run {run_id} round {round}") as session:
            where = (GlobalModelRow.run_id == run_id, GlobalModelRow.round == round)
            row = session.scalars(select(GlobalModelRow).where(*where)).first()
            if row is None or row.lineage_sha256 is None or row.config_sha256 is None:
                return None
            earlier = (GlobalModelRow.run_id == run_id, GlobalModelRow.round < round)
            previous = session.scalar(
                select(GlobalModelRow.lineage_sha256).where(*earlier).order_by(GlobalModelRow.round.desc())
            )
            inputs = tuple(sorted(_inputs(session, row)))
            return LineageEntry(
                run_id, row.round, row.sha256, row.num_samples, previous, inputs, row.config_sha256, row.lineage_sha256
            )

    def verify_lineage(self, run_id: str) -> LineageReport:
        """Check every global model of ``run_id`` in round order: its blob, its local models' blobs,
        the run config's hash and the link; stops at the first mismatch. Rows recorded before
        schema v6 (no link) are listed as unchained and restart the chain after them."""
        with self._session(f"verify the lineage of run {run_id}") as session:
            run = session.get(RunRow, run_id)
            if run is None:
                raise StoreError(f"no run with id {run_id!r} (see `fedloom runs list`)")
            config_hash = config_sha256(run.config)
            rows = list(
                session.scalars(
                    select(GlobalModelRow).where(GlobalModelRow.run_id == run_id).order_by(GlobalModelRow.round)
                )
            )
            inputs = {row.round: _inputs(session, row) for row in rows}
            locals_ = list(session.scalars(select(LocalModelRow).where(LocalModelRow.run_id == run_id)))
        checked, blobs, unchained, previous = 0, 0, [], None
        for row in rows:
            found = self._check_blob("global_models", row.round, row.blob_key, row.sha256, row.num_samples)
            found = found or self._check_locals(row.round, [r for r in locals_ if r.round == row.round])
            if found is None and row.lineage_sha256 is None:
                unchained.append(row.round)
                previous = None  # what the next row's writer saw as its previous link
                continue
            verified = row.blob_key is not None and self._blobs is not None
            found = found or _check_link(row, inputs[row.round], previous, config_hash, verified)
            blobs += (row.blob_key is not None) + sum(r.round == row.round and r.blob_key is not None for r in locals_)
            if found is not None:
                return LineageReport(run_id, checked, tuple(unchained), found, blobs, previous)
            checked, previous = checked + 1, row.lineage_sha256
        return LineageReport(run_id, checked, tuple(unchained), None, blobs, previous)

    def _check_locals(self, round: int, rows: list[LocalModelRow]) -> LineageMismatch | None:
        for row in sorted(rows, key=lambda r: r.client_id):
            found = self._check_blob("local_models", round, row.blob_key, row.sha256, None, row.client_id)
            if found is not None:
                return found
        return None

    def _check_blob(
        self, table: str, round: int, key: str | None, sha256: str, num_samples: int | None, client: str = ""
    ) -> LineageMismatch | None:
        """A kept blob must parse and hold the tensors (and, for a global model, the sample count) its row says."""
        if key is None or self._blobs is None:
            return None
        who = f" (client {client!r})" if client else ""
        try:
            _weights, header = from_bytes(self._blobs.get(key))
        except (StoreError, IntegrityError, SerializationError) as exc:
            return LineageMismatch(round, table, f"blob {key}{who} cannot be verified: {exc}")
        if header.sha256 != sha256:
            return LineageMismatch(
                round, table, f"blob{who} holds tensors hashing to {header.sha256}, row says {sha256}"
            )
        if num_samples is not None and header.num_samples != num_samples:
            return LineageMismatch(round, table, f"num_samples: row says {num_samples}, blob says {header.num_samples}")
        return None


def _check_link(
    row: GlobalModelRow,
    inputs: list[tuple[str, str, int]],
    previous: str | None,
    config_hash: str,
    blob_verified: bool,
) -> LineageMismatch | None:
    """Compare the stored config hash and link with what the stored rows give now.

    Earlier links matched, so a wrong link means this round's rows changed: with the global
    model's blob verified (its sha256 and num_samples confirmed) that is the round's local
    models, or the stored link itself; without a blob it may be either table."""
    if row.config_sha256 != config_hash:
        detail = f"config: the run's config now hashes to {config_hash}, round {row.round} recorded {row.config_sha256}"
        return LineageMismatch(row.round, "runs", detail)
    link = lineage_link(row.run_id, row.round, row.sha256, row.num_samples, previous, inputs, config_hash)
    if link != row.lineage_sha256:
        if blob_verified:
            table, changed = "local_models", "the round's local models (client_id, sha256, num_samples) changed"
            changed += " since the link was written, or global_models.lineage_sha256 was edited"
        else:
            table, changed = "global_models/local_models", "this global model's row or the round's local models changed"
        return LineageMismatch(
            row.round, table, f"lineage link: recomputed {link}, stored {row.lineage_sha256}: {changed}"
        )
    return None
