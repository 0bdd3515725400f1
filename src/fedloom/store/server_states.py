"""The server optimiser's state, stored with each global model: one row and one safetensors blob.

FedAdam's moments and FedAvgM's momentum change every round and are not in the global
model; without them a restarted aggregator (or a resumed simulation) would have to
replay every stored round. The ``ServerStatesMixin`` part of
:class:`fedloom.store.SqlStore` keeps them per (run, round) as named tensors plus the
step counter. The counter travels inside the blob as the 0-d int64 tensor
:data:`STEP_TENSOR` (so a state with no tensors still has a valid, non-empty file) and
in the row; reads check that the two agree and that the blob hashes to the row's hash.
Like a model, the blob is written before the row that references it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sqlalchemy import select

from fedloom.core.errors import IntegrityError, StoreError
from fedloom.core.serialization import content_hash, from_bytes, to_bytes
from fedloom.core.weights import Weights, check_structure
from fedloom.store.checks import INT32_MAX, check_int
from fedloom.store.connection import SqlCore
from fedloom.store.schema import GlobalModelRow, ServerStateRow
from fedloom.store.types import utcnow

#: the name of the step counter inside a state's blob (no optimiser tensor may use it)
STEP_TENSOR = "fedloom.server_opt.step"
#: the header's ``content`` value that marks a blob as a server-optimiser state, not a model
_CONTENT = "server-opt-state"


class ServerStatesMixin(SqlCore):
    """Save and load the server optimiser's state of a round (only after that round's global model)."""

    def save_server_state(self, run_id: str, round: int, state_tensors: Mapping[str, np.ndarray], step: int) -> None:
        """Store the optimiser's state after ``round``; the round's global model must already be stored.

        Use ``save_global_model(..., server_state=(tensors, step))`` to write both in one transaction.
        """
        row = self._server_state_row(run_id, round, state_tensors, step)
        where = (GlobalModelRow.run_id == run_id, GlobalModelRow.round == row.round)
        conflict = f"run {run_id} already has a server-optimiser state for round {round}: exactly one per round"
        with self._session(f"save the server state of run {run_id} round {round}", run_id, conflict) as session:
            if session.scalar(select(GlobalModelRow.id).where(*where)) is None:
                raise StoreError(f"run {run_id} has no global model for round {round}: save it first")
            session.add(row)

    def load_server_state(self, run_id: str, round: int) -> tuple[Weights, int] | None:
        """The optimiser's ``(tensors, step)`` stored with ``round``'s global model, or None when none was
        stored (a run recorded before schema version 4, or without a server optimiser)."""
        where = (ServerStateRow.run_id == run_id, ServerStateRow.round == round)
        with self._session(f"load the server state of run {run_id} round {round}") as session:
            row = session.scalars(select(ServerStateRow).where(*where)).first()
            found = None if row is None else (row.step, row.sha256, row.blob_key)
        if found is None:
            return None
        step, sha256, key = found
        what = f"the server state of run {run_id} round {round}"
        if key is None or self._blobs is None:
            raise StoreError(f"{what} was recorded without its tensors (no blob store)")
        tensors, header = from_bytes(self._blobs.get(key))
        if header.sha256 != sha256:
            raise IntegrityError(f"{what}: blob holds tensors hashing to {header.sha256}, row says {sha256}")
        stored_step = int(tensors.pop(STEP_TENSOR, np.array(-1)))
        if stored_step != step:
            raise IntegrityError(f"{what}: blob says step {stored_step}, row says {step}")
        return tensors, step

    def _server_state_row(
        self, run_id: str, round: int, state_tensors: Mapping[str, np.ndarray], step: int
    ) -> ServerStateRow:
        """Validate a state, write its blob and return the (not yet added) row that references it."""
        round = check_int("round", round, maximum=INT32_MAX)
        step = check_int("step", step)
        if STEP_TENSOR in state_tensors:
            raise StoreError(f"tensor name {STEP_TENSOR!r} is reserved for the server optimiser's step counter")
        tensors = {**state_tensors, STEP_TENSOR: np.array(step, dtype=np.int64)}
        check_structure(tensors)
        key = None
        if self._blobs is not None:
            key = self._put_blob(to_bytes(tensors, round=round, extra={"content": _CONTENT}))
        return ServerStateRow(
            run_id=run_id, round=round, step=step, sha256=content_hash(tensors), blob_key=key, created_at=utcnow()
        )
