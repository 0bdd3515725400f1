"""System metrics in deployment: the agents' reported rows and the aggregator's own, per round.

Both are written by the round recorder (:class:`MeteredRecorder`), at the moment the
lifecycle records the matching event, so they land before the write that finishes the
run and a crash at any write resumes like any other:

- an agent's ``system`` header field (checked by :mod:`fedloom.server.uploads`) is held
  while its update is judged and stored with the accepted update, under the agent's
  name; a refused update leaves no rows;
- the aggregator's own rows (client id ``"aggregator"``) when a round closes or is
  abandoned (an async version when it is made): ``bytes_up`` (global models served),
  ``bytes_down`` (upload bodies received) since the previous round ended, and, with a
  sampler, the process's ``cpu_percent`` / ``memory_rss_bytes`` (psutil, which the
  server does not import: ``fedloom server`` passes the sampler in).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from fedloom.core.errors import ValidationError
from fedloom.core.store_protocols import RunWriter
from fedloom.core.system_metrics import AGGREGATOR_ID, SYSTEM_SCOPE, validate_system_metrics
from fedloom.core.update import UpdateReport
from fedloom.core.weights import Weights
from fedloom.server.engine import RoundOutcome
from fedloom.server.limits import BudgetedRecorder, RejectionBudget

log = logging.getLogger("fedloom.aggregator")

#: what a sampler returns: e.g. ``cpu_percent`` and ``memory_rss_bytes`` of this process
ProcessSampler = Callable[[], Mapping[str, float]]


class AggregatorMeter:
    """Counts payload bytes and holds agents' reports until their updates are accepted (thread-safe)."""

    def __init__(self, sampler: ProcessSampler | None = None) -> None:
        self._sampler = sampler
        self._lock = threading.Lock()
        self._bytes_up = 0
        self._bytes_down = 0
        self._reported: dict[str, tuple[str, dict[str, float]]] = {}

    def served(self, num_bytes: int) -> None:
        """A global model of ``num_bytes`` bytes went out to an agent."""
        with self._lock:
            self._bytes_up += num_bytes

    def received(self, num_bytes: int) -> None:
        """An upload body of ``num_bytes`` bytes came in."""
        with self._lock:
            self._bytes_down += num_bytes

    def expect(self, agent_id: str, agent_name: str, system: Mapping[str, float]) -> None:
        """The checked report of the update ``agent_id`` is submitting now (replacing any earlier one)."""
        with self._lock:
            self._reported[agent_id] = (agent_name, dict(system))

    def take(self, agent_id: str) -> tuple[str, dict[str, float]] | None:
        with self._lock:
            return self._reported.pop(agent_id, None)

    def round_ended(self) -> dict[str, float]:
        """The aggregator's figures since the previous round ended (the counters start again)."""
        with self._lock:
            values = {"bytes_up": float(self._bytes_up), "bytes_down": float(self._bytes_down)}
            self._bytes_up = self._bytes_down = 0
        try:
            values.update(self._sampler() if self._sampler is not None else {})
            return validate_system_metrics(values)
        except (ValidationError, OSError):
            log.exception("sampling the aggregator's process failed; its bytes are still recorded")
            return validate_system_metrics({k: values[k] for k in ("bytes_up", "bytes_down")})


class MeteredRecorder(BudgetedRecorder):
    """The aggregator's recorder, also writing the ``system`` rows (see the module docstring)."""

    def __init__(
        self,
        meter: AggregatorMeter,
        store: RunWriter,
        run_id: str,
        budget: RejectionBudget,
        current_round: Callable[[], int],
        *,
        keep_local_models: bool = False,
    ) -> None:
        super().__init__(store, run_id, budget, current_round, keep_local_models=keep_local_models)
        self.meter = meter

    def update_accepted(self, report: UpdateReport, weights: Weights | None) -> None:
        super().update_accepted(report, weights)
        reported = self.meter.take(report.client_id)
        if reported is not None and reported[1]:
            name, values = reported
            self.store.record_metrics(self.run_id, report.round, values, scope=SYSTEM_SCOPE, client_id=name)

    def _own_rows(self, round: int) -> None:
        values = self.meter.round_ended()
        self.store.record_metrics(self.run_id, round, values, scope=SYSTEM_SCOPE, client_id=AGGREGATOR_ID)

    def round_closed(self, outcome: RoundOutcome) -> None:
        super().round_closed(outcome)
        self._own_rows(outcome.round)

    def version_made(self, outcome: RoundOutcome) -> None:
        super().version_made(outcome)
        self._own_rows(outcome.round)

    def round_abandoned(self, round: int, num_updates: int, num_samples: int) -> None:
        super().round_abandoned(round, num_updates, num_samples)
        self._own_rows(round)
