"""RoundWatchers: a full queue drops new rounds with one log line, never the run's end; close drains."""

from __future__ import annotations

import logging
import threading

from fedloom.core.observe import RoundSummary, RunEnd, RunInfo
from fedloom.server.round_watchers import RoundWatchers

INFO = RunInfo("run", "name", "deployment", 5, 0)


class Gate:
    """Blocks in its first on_round until released, then keeps what it is told."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.rounds: list[int] = []
        self.ends: list[str] = []

    def on_start(self, run: RunInfo) -> None:
        pass

    def on_round(self, summary: RoundSummary) -> None:
        self.entered.set()
        self.release.wait(10)
        self.rounds.append(summary.round)

    def on_finish(self, run: RunInfo, end: RunEnd) -> None:
        self.ends.append(end.status)


def test_a_full_queue_drops_rounds_once_logged_keeps_the_end_and_close_drains(caplog):
    gate = Gate()
    watchers = RoundWatchers([gate], queue_size=2)
    watchers.round_recorded(RoundSummary(1, 0, 1, 1, {}, 0.0))
    assert gate.entered.wait(5)  # the worker holds round 1; the queue is empty again
    with caplog.at_level(logging.WARNING, logger="fedloom.aggregator"):
        for round in (2, 3, 4, 5):
            watchers.round_recorded(RoundSummary(round, 0, 1, 1, {}, 0.0))
        watchers.finished(INFO, RunEnd("finished", 5))
        watchers.finished(INFO, RunEnd("interrupted", 5))  # told once only
    assert sum("dropping new ones" in r.getMessage() for r in caplog.records) == 1
    gate.release.set()
    watchers.close()
    assert gate.rounds == [1, 2, 3]
    assert gate.ends == ["finished"]  # it came while the queue was full, and is told after the rounds
