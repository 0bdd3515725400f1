"""What a simulation returns: per-round summaries (:class:`~fedloom.core.observe.RoundSummary`) and the final model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedloom.core.observe import RoundSummary
from fedloom.core.weights import Weights


@dataclass(frozen=True)
class SimulationResult:
    """The run id in the store (None when not stored), every round, and the final global model."""

    run_id: str | None
    history: list[RoundSummary]
    final_weights: Weights
    config: Mapping[str, object] = field(default_factory=dict)

    def series(self, metric: str) -> list[tuple[int, float]]:
        """``[(round, value), ...]`` for one metric, e.g. ``result.series("accuracy")``."""
        return [(s.round, float(s.metrics[metric])) for s in self.history if metric in s.metrics]

    @property
    def final_metrics(self) -> Mapping[str, float]:
        return self.history[-1].metrics if self.history else {}


__all__ = ["RoundSummary", "SimulationResult"]
