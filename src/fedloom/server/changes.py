"""A version counter that asyncio code can wait on, bumped from any thread.

The aggregator changes state in worker threads (uploads, registrations) and in the
background tick; long-polling requests wait in the event loop. Each waiter parks an
``asyncio.Future`` on its own loop, and :meth:`ChangeNotifier.bump` resolves them with
``call_soon_threadsafe``, so nobody blocks a thread or sleeps to notice a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ChangeNotifier:
    """``version`` grows by one on every :meth:`bump`; :meth:`wait` returns once it moved."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._closed = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    @property
    def closed(self) -> bool:
        return self._closed

    def bump(self) -> None:
        """Record a change and wake every waiter."""
        with self._lock:
            self._version += 1
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    def close(self) -> None:
        """Wake every waiter and make later waits return at once (the server is shutting down)."""
        with self._lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        self._wake(waiters)

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        for loop, future in waiters:
            # a loop that has been closed has no request left to answer
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, since: int, timeout: float) -> int:
        """Wait until the version differs from ``since`` (or ``timeout`` seconds pass); return the version."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._closed or self._version != since:
                return self._version
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self.version
