"""Global and local models: rows in the database, tensors as safetensors blobs.

The ``ModelsMixin`` part of :class:`fedloom.store.SqlStore`. A model's blob is written
(atomically) *before* the row that references it, so a row never points at a missing
blob; the worst a crash can leave is an unreferenced blob. Reads verify the blob
against the row's content hash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import select

from fedloom.core.errors import IntegrityError, StoreError
from fedloom.core.records import ModelRecord
from fedloom.core.serialization import content_hash, from_bytes, to_bytes
from fedloom.core.store_protocols import LocalModelWrite
from fedloom.core.weights import Weights, check_structure
from fedloom.store.checks import INT32_MAX, check_int, check_name
from fedloom.store.lineage import lineage_columns
from fedloom.store.row_records import global_record, local_record
from fedloom.store.schema import GlobalModelRow, LocalModelRow
from fedloom.store.server_states import ServerStatesMixin
from fedloom.store.types import utcnow

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelsMixin(ServerStatesMixin):
    """Save and load the one global model per round (with its server-optimiser state) and the local models."""

    def save_global_model(
        self,
        run_id: str,
        round: int,
        weights: Weights,
        num_samples: int,
        server_state: tuple[Mapping[str, np.ndarray], int] | None = None,
    ) -> int:
        """Store the round's single global model (blob first, then row); returns its id.

        ``server_state`` — the server optimiser's ``(tensors, step)`` after the round — is
        stored in the same transaction, so a crash never leaves a global model whose
        optimiser state is missing; a state that is refused refuses the model too.
        """
        check_int("round", round, maximum=INT32_MAX)
        check_int("num_samples", num_samples)
        check_structure(weights)
        conflict = f"run {run_id} already has a global model for round {round}: exactly one is allowed per round"
        if self._global_row_id(run_id, round) is not None:
            raise StoreError(conflict)
        state = None if server_state is None else self._server_state_row(run_id, round, *server_state)
        sha256 = content_hash(weights)
        key = (
            self._put_blob(to_bytes(weights, round=round, num_samples=num_samples)) if self._blobs is not None else None
        )
        row = GlobalModelRow(
            run_id=run_id, round=round, num_samples=num_samples, sha256=sha256, blob_key=key, created_at=utcnow()
        )
        action = f"save the global model of run {run_id} round {round}"
        with self._session(action, run_id=run_id, conflict=conflict) as session:
            lineage_columns(session, row)  # in the same transaction: a row never exists without its link
            session.add(row)
            if state is not None:
                session.add(state)
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
        payload: bytes | None = None,
    ) -> int:
        """Store one client's accepted update; pass ``weights=None`` with ``sha256`` to record it blob-less.

        ``payload`` (an upload's bytes as received, whose ``sha256`` the parser verified) is
        kept as it is: no second serialisation and no second content hash."""
        row = self._local_row(
            run_id, LocalModelWrite(round, client_id, weights, num_samples, metrics, sha256, keep_blob, payload)
        )
        conflict = _local_conflict(run_id, round, client_id)
        action = f"save the local model of client {client_id!r} in run {run_id} round {round}"
        with self._session(action, run_id=run_id, conflict=conflict) as session:
            session.add(row)
            session.flush()
        return row.id

    def save_local_models(self, run_id: str, models: Sequence[LocalModelWrite]) -> list[int]:
        """Store several accepted updates in one transaction (a simulated round's, written when it
        ends): each checked as :meth:`save_local_model` checks it; all or none; ids in order."""
        rows, seen = [], set()
        for model in models:
            if (model.round, model.client_id) in seen:
                raise StoreError(_local_conflict(run_id, model.round, model.client_id))
            seen.add((model.round, model.client_id))
            rows.append(self._local_row(run_id, model))
        try:
            with self._session(f"save {len(rows)} local models in run {run_id}", run_id=run_id) as session:
                session.add_all(rows)
                session.flush()
        except StoreError as exc:  # name the update that is already stored, as save_local_model would
            stored = {(r.round, r.client_id) for r in self.list_local_models(run_id)}
            clash = next((m for m in models if (m.round, m.client_id) in stored), None)
            if clash is None:
                raise
            raise StoreError(_local_conflict(run_id, clash.round, clash.client_id)) from exc
        return [row.id for row in rows]

    def _local_row(self, run_id: str, model: LocalModelWrite) -> LocalModelRow:
        """A local model's row, checked, its blob (if kept) already written."""
        check_int("round", model.round, maximum=INT32_MAX)
        check_int("num_samples", model.num_samples)
        sha256 = _local_hash(None if model.payload is not None else model.weights, model.sha256)
        key = None
        if model.payload is not None and model.keep_blob:
            key = self._put_blob(model.payload)
        elif model.weights is not None and model.keep_blob and self._blobs is not None:
            blob = to_bytes(model.weights, round=model.round, client_id=model.client_id, num_samples=model.num_samples)
            key = self._put_blob(blob)
        return LocalModelRow(
            run_id=run_id,
            round=model.round,
            client_id=check_name("client_id", model.client_id),
            num_samples=model.num_samples,
            sha256=sha256,
            blob_key=key,
            metrics={str(k): float(v) for k, v in model.metrics.items()},
            created_at=utcnow(),
        )

    def list_global_models(self, run_id: str) -> list[ModelRecord]:
        """Every global model of the run in round order."""
        stmt = select(GlobalModelRow).where(GlobalModelRow.run_id == run_id).order_by(GlobalModelRow.round)
        with self._session(f"list global models of run {run_id}") as session:
            return [global_record(r) for r in session.scalars(stmt)]

    def latest_global_model(self, run_id: str) -> ModelRecord | None:
        """The global model of the highest round, where a resumed run starts from."""
        stmt = select(GlobalModelRow).where(GlobalModelRow.run_id == run_id).order_by(GlobalModelRow.round.desc())
        with self._session(f"find the latest global model of run {run_id}") as session:
            row = session.scalars(stmt.limit(1)).first()
            return None if row is None else global_record(row)

    def load_global_model(self, run_id: str, round: int) -> Weights:
        """The weights of a round's global model, verified against the stored content hash."""
        where = (GlobalModelRow.run_id == run_id, GlobalModelRow.round == round)
        with self._session(f"load the global model of run {run_id} round {round}") as session:
            row = session.scalars(select(GlobalModelRow).where(*where)).first()
            record = None if row is None else global_record(row)
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
            return [local_record(r) for r in session.scalars(stmt)]

    def load_local_model(self, run_id: str, round: int, client_id: str) -> Weights:
        """A client's stored update, e.g. to rebuild a round's aggregate after a restart."""
        where = (LocalModelRow.run_id == run_id, LocalModelRow.round == round, LocalModelRow.client_id == client_id)
        with self._session(f"load the local model of client {client_id!r}") as session:
            row = session.scalars(select(LocalModelRow).where(*where)).first()
            record = None if row is None else local_record(row)
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


def _local_conflict(run_id: str, round: int, client_id: str) -> str:
    return f"client {client_id!r} already has a local model in round {round} of run {run_id}"


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
