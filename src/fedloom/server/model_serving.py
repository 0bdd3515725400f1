"""Serving global models and their lineage links to agents: the read side of the aggregator.

A part of :class:`~fedloom.server.aggregator.Aggregator` (a mixin over its lock, driver and
store) because both answers resolve a round to a stored global model the same way: the
model that starts round ``r`` is the newest global model row at or before ``r - 1``
(abandoned rounds write none). Serving the link beside the model lets an agent check
what it is given against the chain (:mod:`fedloom.client.lineage_check`).
"""

from __future__ import annotations

import threading
from typing import Literal

from fedloom.core.lineage import LineageEntry
from fedloom.core.records import ModelRecord
from fedloom.core.serialization import to_bytes
from fedloom.core.store_protocols import DeploymentStore
from fedloom.server.answers import refusal
from fedloom.server.run_driver import RunDriver
from fedloom.server.run_state import RunState
from fedloom.server.served_model import ServedModel


class ModelServing:
    """Global-model payloads and lineage entries by round, for the HTTP layer."""

    _lock: threading.RLock
    _driver: RunDriver
    store: DeploymentStore
    run_id: str

    @property
    def _state(self) -> RunState:
        """The in-memory state (replaced on every reload, so always read through the driver)."""
        return self._driver.state

    def global_model_bytes(self, round: int | Literal["latest"], agent_id: str | None = None) -> tuple[bytes, str]:
        """The payload of the global model that starts ``round`` (or the newest), and its content hash.

        ``agent_id`` (who asks) lets a finished run know which agents have its final model."""
        with self._lock:
            row, latest = self._served_row(round)
            if row >= latest.round:
                if self._driver.finished_at is not None and agent_id is not None:
                    self._driver.fetched_final.add(agent_id)
                if self._state.latest_payload is None:
                    self._state.latest_payload = latest.payload()
                return self._state.latest_payload, latest.sha256
        record = self._stored_model_at(row, round)
        weights = self.store.load_global_model(self.run_id, record.round)
        return to_bytes(weights, round=record.round, num_samples=record.num_samples), record.sha256

    def lineage_entry(self, round: int | Literal["latest"]) -> LineageEntry:
        """The lineage link of the model :meth:`global_model_bytes` serves for ``round``, with what it hashes."""
        with self._lock:
            row, _latest = self._served_row(round)
        entry = self.store.lineage_entry(self.run_id, self._stored_model_at(row, round).round)
        if entry is None:
            raise refusal("not_found", f"the global model that starts round {round} has no lineage link")
        return entry

    def _served_row(self, round: int | Literal["latest"]) -> tuple[int, ServedModel]:
        """The global-model row that starts ``round`` (under the lock) and the newest model."""
        self._driver.ensure_loaded()
        latest = self._state.latest
        if latest is None:
            raise refusal("not_found", "the run has no global model yet")
        current = self._state.current_round()
        if round != "latest" and not 1 <= round <= current:
            raise refusal("not_found", f"round {round} has not started (rounds run from 1 to {current})")
        return (latest.round if round == "latest" else round - 1), latest

    def _stored_model_at(self, row: int, round: int | Literal["latest"]) -> ModelRecord:
        """The newest stored global model at or before ``row`` (abandoned rounds wrote none)."""
        models = [m for m in self.store.list_global_models(self.run_id) if m.round <= row]
        if not models:
            raise refusal("not_found", f"no global model starts round {round}")
        return models[-1]
