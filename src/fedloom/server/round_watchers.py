"""Observers of a deployed run, told after each round is recorded, off the lifecycle's thread.

The aggregator holds its lock while it ticks the round lifecycle; a tracking sink may
take seconds (a slow MLflow server, a full disk). So the events go into a bounded queue
and one worker thread calls the observers: a round's agents never wait on a watcher.
When the queue is full a round is dropped with one log line (the store still has it); the
run's end is never dropped: it is kept apart and told once every queued round was.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence

from fedloom.core.observe import RoundObserver, RoundSummary, RunEnd, RunInfo

log = logging.getLogger("fedloom.aggregator")

#: events waiting for the observers before new ones are dropped
QUEUE_SIZE = 256
#: seconds a closing aggregator waits for the observers to finish what is queued
DRAIN_SECONDS = 30.0


class RoundWatchers:
    """Calls ``observers`` from one worker thread; every method returns at once."""

    def __init__(self, observers: Sequence[RoundObserver], queue_size: int = QUEUE_SIZE) -> None:
        self.observers = list(observers)
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._finished = False
        self._final: Callable[[], None] | None = None  # the run's end, told after the queued rounds
        if self.observers:
            self._thread = threading.Thread(target=self._work, name="fedloom-watchers", daemon=True)
            self._thread.start()

    def started(self, run: RunInfo) -> None:
        self._put(lambda: self._tell("on_start", lambda o: o.on_start(run)))

    def round_recorded(self, summary: RoundSummary) -> None:
        self._put(lambda: self._tell("on_round", lambda o: o.on_round(summary)))

    def finished(self, run: RunInfo, end: RunEnd) -> None:
        """The run's end, told once (a finished run is not told again that it was interrupted)."""
        if self._finished or self._thread is None:
            return
        self._finished = True
        self._final = lambda: self._tell("on_finish", lambda o: o.on_finish(run, end))
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(lambda: None)  # wakes an idle worker; a busy one sees it next

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Let the worker finish what is queued (at most ``timeout`` seconds), then stop it."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("watchers: still busy after %.0f s; stopping without the rest", timeout)
            return
        self._thread.join(timeout)
        self._thread = None

    def _put(self, event: Callable[[], None]) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("watchers: %d events queued; dropping new ones (the store keeps every round)", QUEUE_SIZE)

    def _work(self) -> None:
        while (event := self._queue.get()) is not None:
            event()
            if self._queue.empty():
                self._tell_final()
        self._tell_final()

    def _tell_final(self) -> None:
        final, self._final = self._final, None
        if final is not None:
            final()

    def _tell(self, what: str, call: Callable[[RoundObserver], None]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception:  # an observer must never stop the worker, nor the run
                log.exception("watchers: %s of %s failed", what, type(observer).__name__)
