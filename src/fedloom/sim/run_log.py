"""The store writes of one simulated run: the run row, its clients, per-round metrics, the finish.

:class:`RunLog` is a round observer like the progress printer. Every method is a no-op
when no store is given (``store=None``), so the driver never branches on it. Round
events (rounds, local and global models, rejections) are written by the lifecycle's
recorder (:class:`~fedloom.server.recording.StoreRecorder`), the same one the deployed
aggregator uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedloom.algorithms.dp.central import PRIVACY_PREFIX
from fedloom.core.errors import ConfigError
from fedloom.core.observe import RoundSummary, RunEnd, RunInfo
from fedloom.server.recording import StoreRecorder
from fedloom.sim.resume import RoundBuffer


def resolve_store(store: Any) -> Any:
    if store == "default":
        from fedloom.store import SqlStore

        return SqlStore.open_default()
    return store


class RunLog:
    """The store writes of one run; every method is a no-op when no store is given."""

    def __init__(
        self,
        store: Any,
        name: str,
        config: Mapping[str, Any],
        seed: int,
        keep_local_models: bool,
        resume: str | None = None,
    ) -> None:
        self.store = resolve_store(store)
        self.resumed = resume is not None
        if resume is not None:
            if not self.store:
                raise ConfigError("resuming a run needs the store it was recorded in (Recording(store=...))")
            self.store.reopen_run(resume)
        self.run_id: str | None = resume
        if self.run_id is None and self.store:
            self.run_id = self.store.create_run(name, "simulation", config, seed)
        self.recorder = (
            RoundBuffer(StoreRecorder(self.store, self.run_id, keep_local_models=keep_local_models))
            if self.run_id
            else None
        )

    def register_clients(self, clients: Sequence[tuple[str, int | None]]) -> None:
        if self.run_id and not self.resumed:
            self.store.register_clients(self.run_id, clients)

    def on_start(self, run: RunInfo) -> None:
        """The run row was written when the log was made (the recorder needs its id first)."""

    def on_round(self, summary: RoundSummary) -> None:
        if self.run_id:
            # the round recorder already stored the outcome's metrics (train_*, the aggregator's privacy/*)
            evaluation = {k: v for k, v in summary.metrics.items() if not k.startswith(("train_", PRIVACY_PREFIX))}
            self.store.record_metrics(self.run_id, summary.round, {**evaluation, "seconds": summary.seconds})
            self.store.record_party_metrics(self.run_id, summary.round, "client", summary.per_client)
            self.store.record_party_metrics(self.run_id, summary.round, "system", summary.system)

    def home_hint(self) -> str:
        """``DIR`` for a ``--home DIR`` hint when the store is not where the CLI looks by default."""
        from fedloom.store.sql import resolve_home

        home = getattr(self.store, "home", None)
        return str(home) if home is not None and home.resolve() != resolve_home().resolve() else ""

    def on_finish(self, run: RunInfo, end: RunEnd) -> None:
        if self.recorder is not None and end.status == "finished":
            self.recorder.flush()  # what the last round refused after it closed
        elif self.recorder is not None:
            self.recorder.flush_refusals()
        if self.run_id:
            summary = {"rounds_completed": end.rounds_completed, **end.metrics}
            self.store.finish_run(self.run_id, end.status, summary)
