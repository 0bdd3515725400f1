"""The round observer that reads each recorded round from the store and hands it to the sinks.

Reading the store (rather than the summary the lifecycle emits) makes a simulated and a
deployed run the same code, and makes every value in a tool the value stored. A sink
that fails is logged once and dropped: watching a run must never stop it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fedloom.core.observe import RoundSummary, RunEnd, RunInfo
from fedloom.tracking.report import flat_params, read_round_report
from fedloom.tracking.sink import TrackingSink

logger = logging.getLogger("fedloom.tracking")


class TrackingFeed:
    """A :class:`~fedloom.core.observe.RoundObserver`: must come after the store's writer."""

    def __init__(self, store: Any, sinks: Sequence[TrackingSink]) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.run_id: str | None = None
        #: sink name -> the error that dropped it
        self.failures: dict[str, str] = {}
        #: the newest rejection already reported (each refusal is counted once, when it is recorded)
        self.last_rejection_id = 0

    def on_start(self, run: RunInfo) -> None:
        self.run_id = run.run_id
        if self.run_id is None:
            return
        params = flat_params(self.store.get_run(self.run_id).config)
        self._each("start", lambda sink: sink.start(str(self.run_id), run.name, params))

    def on_round(self, summary: RoundSummary) -> None:
        if self.run_id is None or not self.sinks:
            return
        try:
            report = read_round_report(self.store, self.run_id, summary.round, self.last_rejection_id)
        except Exception as exc:  # a store read must not stop the run either
            logger.warning("tracking: could not read round %s from the store: %s", summary.round, exc)
            return
        self.last_rejection_id = max([self.last_rejection_id, *(r.id for r in report.rejections)])
        scalars = report.scalars()
        self._each("log_round", lambda sink: sink.log_round(summary.round, scalars))

    def on_finish(self, run: RunInfo, end: RunEnd) -> None:
        if self.run_id is None or not self.sinks:
            return
        model: bytes | None = None
        try:
            latest = self.store.latest_global_model_bytes(self.run_id)
            model = None if latest is None else latest[1]
        except Exception as exc:
            logger.warning("tracking: could not read the final global model: %s", exc)
        self._each("finish", lambda sink: sink.finish(end.status, model))

    def _each(self, what: str, call: Any) -> None:
        """Call every sink still alive; the first failure of one drops it, with one log line."""
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as exc:
                self.sinks.remove(sink)
                self.failures[sink.name] = f"{type(exc).__name__}: {exc}"
                logger.warning("tracking: %s failed in %s and is turned off for this run: %s", sink.name, what, exc)
