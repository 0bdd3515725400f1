"""The aggregator's own system metrics: bytes it served and received, and its process's use, per round.

Rows go to the ``metrics`` table with scope ``"system"`` and client id ``"aggregator"``
when a round ends (closed or abandoned: whenever the current round number moves on),
so an operator can see what serving a round cost next to what the agents reported.
Measuring the process (CPU, memory) needs psutil, which the server does not import:
the wiring (``fedloom server``) passes a sampler in; without one only bytes are kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from fedloom.core.errors import StoreError, ValidationError
from fedloom.core.store_protocols import DeploymentStore
from fedloom.core.system_metrics import AGGREGATOR_ID, SYSTEM_SCOPE, validate_system_metrics

log = logging.getLogger("fedloom.aggregator")

#: what a sampler returns: e.g. ``cpu_percent`` and ``memory_rss_bytes`` of this process
ProcessSampler = Callable[[], Mapping[str, float]]


class AggregatorMeter:
    """Counts payload bytes (thread-safe) and writes one row set per ended round."""

    def __init__(self, store: DeploymentStore, run_id: str, sampler: ProcessSampler | None = None) -> None:
        self._store = store
        self._run_id = run_id
        self._sampler = sampler
        self._lock = threading.Lock()
        self._bytes_up = 0
        self._bytes_down = 0
        self._round: int | None = None

    def served(self, num_bytes: int) -> None:
        """A global model of ``num_bytes`` bytes went out to an agent."""
        with self._lock:
            self._bytes_up += num_bytes

    def received(self, num_bytes: int) -> None:
        """An upload body of ``num_bytes`` bytes came in."""
        with self._lock:
            self._bytes_down += num_bytes

    def note_round(self, current: int) -> None:
        """Called after the lifecycle moved: when ``current`` differs from the last round seen,
        the last one ended and its rows are written. A failed write is logged, never raised
        (the request that moved the round already succeeded)."""
        with self._lock:
            ended, self._round = self._round, current
            if ended is None or ended == current or ended < 1:
                return
            values = {"bytes_up": float(self._bytes_up), "bytes_down": float(self._bytes_down)}
            self._bytes_up = self._bytes_down = 0
        try:
            values.update(self._sampler() if self._sampler is not None else {})
            checked = validate_system_metrics(values)
            self._store.record_metrics(self._run_id, ended, checked, scope=SYSTEM_SCOPE, client_id=AGGREGATOR_ID)
        except (StoreError, ValidationError):
            log.exception("round %d: recording the aggregator's system metrics failed", ended)
