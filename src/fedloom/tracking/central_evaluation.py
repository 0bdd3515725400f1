"""The aggregator's own test of each global model, recorded as the round's server metrics.

Deployed agents report what they measured while training (``train_loss``...), so without
this a deployed run has no evaluation curve. Simulation evaluates centrally with
``Evaluation(central=...)``; this is the deployed counterpart: an observer told after each
round is recorded, which reads that round's global model back from the store, calls a
trainer's ``evaluate`` on it and records the values under the round, before the tracking
feed (which comes after it) reads the round. It runs on the aggregator's watcher thread,
so a slow evaluation never holds an upload. A failing evaluator is logged once and
stopped: watching never stops a run.
"""

from __future__ import annotations

import logging
from typing import Any

from fedloom.core.fit import EvalConfig
from fedloom.core.metrics import validate_metrics
from fedloom.core.observe import RoundSummary, RunEnd, RunInfo
from fedloom.core.reserved import model_part

logger = logging.getLogger("fedloom.evaluation")


class CentralEvaluation:
    """A :class:`~fedloom.core.observe.RoundObserver` that evaluates and records each round's model."""

    def __init__(self, store: Any, trainer: Any) -> None:
        self.store, self.trainer = store, trainer
        self.run_id: str | None = None
        #: why evaluation stopped, once it failed
        self.failure: str | None = None

    def on_start(self, run: RunInfo) -> None:
        self.run_id = run.run_id

    def on_round(self, summary: RoundSummary) -> None:
        if self.run_id is None or self.failure is not None:
            return
        try:
            metrics = self.evaluate(summary.round)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.warning("evaluation of round %s failed, no further rounds are evaluated: %s", summary.round, exc)
            return
        if metrics:
            self.store.record_metrics(self.run_id, summary.round, metrics, scope="server")

    def evaluate(self, round_no: int) -> dict[str, float]:
        """The evaluator's metrics of the model ``round_no`` produced ({} when it made none: abandoned)."""
        assert self.run_id is not None
        if round_no not in {record.round for record in self.store.list_global_models(self.run_id)}:
            return {}
        weights = model_part(self.store.load_global_model(self.run_id, round_no))
        return validate_metrics(dict(self.trainer.evaluate(weights, EvalConfig())))

    def on_finish(self, run: RunInfo, end: RunEnd) -> None:
        """Nothing to close: every round was recorded as it came."""


__all__ = ["CentralEvaluation"]
