"""Adapts a store (a :class:`~fedloom.core.store_protocols.RunWriter`) to the round engine's
RoundRecorder, so every round leaves a record.

Kept apart from the engine so the engine stays free of I/O and can be tested alone,
while simulation and deployment share exactly the same way of recording.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedloom.core.store_protocols import LocalModelsWriter, LocalModelWrite, RunWriter
from fedloom.core.update import UpdateReport
from fedloom.core.weights import Weights
from fedloom.server.engine import RoundOutcome


class StoreRecorder:
    """Writes rounds, local models (blobs optional), global models, metrics and rejections."""

    def __init__(self, store: RunWriter, run_id: str, *, keep_local_models: bool = False) -> None:
        self.store = store
        self.run_id = run_id
        self.keep_local_models = keep_local_models

    def round_opened(self, round: int, selected: Sequence[str]) -> None:
        self.store.open_round(self.run_id, round, selected)

    def update_accepted(self, report: UpdateReport, weights: Weights | None) -> None:
        write = self._write(report, weights)
        self.store.save_local_model(
            self.run_id,
            write.round,
            write.client_id,
            write.weights,
            write.num_samples,
            write.metrics,
            sha256=write.sha256,
            keep_blob=write.keep_blob,
            payload=write.payload,
        )

    def updates_accepted(self, accepted: Sequence[tuple[UpdateReport, Weights | None]]) -> None:
        """Several accepted updates (a simulated round's, held until it ends) in one store write
        where the store can make one (:class:`LocalModelsWriter`), else one by one."""
        if not isinstance(self.store, LocalModelsWriter):
            for report, weights in accepted:
                self.update_accepted(report, weights)
            return
        self.store.save_local_models(self.run_id, [self._write(report, weights) for report, weights in accepted])

    def _write(self, report: UpdateReport, weights: Weights | None) -> LocalModelWrite:
        """What is stored of an accepted update: its tensors (or bytes as received) only when kept."""
        keep = self.keep_local_models
        return LocalModelWrite(
            report.round,
            report.client_id,
            weights if keep else None,
            report.num_samples,
            dict(report.metrics),
            sha256=report.sha256,
            keep_blob=keep,
            payload=report.payload if keep else None,
        )

    def update_rejected(self, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        self.store.record_rejection(self.run_id, round, client_id, code, reason)

    def round_abandoned(self, round: int, num_updates: int, num_samples: int) -> None:
        self.store.close_round(self.run_id, round, "abandoned", num_updates=num_updates, num_samples=num_samples)

    def version_made(self, outcome: RoundOutcome) -> None:
        """An asynchronous version: its global model and metrics (async runs have no round rows)."""
        self.store.save_global_model(self.run_id, outcome.round, outcome.weights, outcome.num_samples)
        if outcome.client_metrics:
            self.store.record_metrics(self.run_id, outcome.round, outcome.client_metrics, scope="server")

    def round_closed(self, outcome: RoundOutcome) -> None:
        """The global model, with the server optimiser's state in the same write; metrics; the round row."""
        state = outcome.server_opt_state
        if state is None:
            self.store.save_global_model(self.run_id, outcome.round, outcome.weights, outcome.num_samples)
        else:
            self.store.save_global_model(
                self.run_id,
                outcome.round,
                outcome.weights,
                outcome.num_samples,
                # an optimiser's step on a 0-d tensor yields a NumPy scalar: stored as the 0-d array it is
                server_state=({name: np.asarray(value) for name, value in state.tensors.items()}, state.step),
            )
        if outcome.client_metrics:
            self.store.record_metrics(self.run_id, outcome.round, outcome.client_metrics, scope="server")
        self.store.close_round(
            self.run_id, outcome.round, num_updates=outcome.num_updates, num_samples=outcome.num_samples
        )
