"""How an agent stops: on request (:meth:`StopControl.stop`, safe from any thread) or on SIGTERM/SIGINT.

A stop request lets the step in progress finish: an HTTP call in flight (upload,
download, registration) completes and the state is saved. Only a step marked
interruptible (a long poll, a retry wait, training) is abandoned at once, by raising
:class:`AgentInterrupted` from the signal handler; a second signal abandons any step.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["AgentInterrupted", "StopControl"]

log = logging.getLogger("fedloom.agent")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class AgentInterrupted(BaseException):
    """Raised from the signal handler to abandon an interruptible step (long poll, training).

    A BaseException, like KeyboardInterrupt, so that a Trainer's ``except Exception``
    does not swallow it.
    """


class StopControl:
    """The stop flags of one agent, and the signal handlers and waits that honour them.

    ``on_stop`` is called on every stop request, so that an HTTP call waiting on the
    network can be cut short (the agent passes its transport's ``interrupt``).
    """

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.requested = False
        self.interruptible = False
        self._on_stop = on_stop

    def stop(self) -> None:
        """Ask the agent to stop after the current step. Safe from other threads and signal handlers."""
        self.requested = True  # plain flags only: no locks, so a signal handler cannot deadlock
        self._on_stop()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = self.requested or self.interruptible
        log.info("received %s: stopping %s", signal.Signals(signum).name, "now" if now else "after this step")
        self.stop()
        if now:
            raise AgentInterrupted(signal.Signals(signum).name)

    @contextmanager
    def signal_handlers(self, enabled: bool) -> Iterator[None]:
        """SIGTERM/SIGINT call :meth:`on_signal` inside the block (only in the main thread, and if ``enabled``)."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.on_signal) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def interruptible_step(self) -> Iterator[None]:
        """A step a stop signal may abandon at once (nothing in it needs finishing)."""
        if self.requested:
            raise AgentInterrupted("stop requested")
        self.interruptible = True
        try:
            yield
        finally:
            self.interruptible = False

    def pause(self, seconds: float) -> None:
        """Sleep in short slices so that a stop request is noticed quickly."""
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.1, left))
