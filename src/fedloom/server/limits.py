"""Limits that keep one agent (or one address) from taking the aggregator away from the others.

Three of them: upload slots (below), a token-bucket :class:`RateLimiter` on refusals and
registrations, and a :class:`RejectionBudget` on the rows one agent's refusals write.

Upload bodies are read into memory, so at most a few are read at once (the aggregator's
memory stays O(slots x model)); the slots are a shared resource, so one agent may hold at
most one of them, and an agent is admitted to one only after its credential and its
right to upload now were checked. What holds a slot is bounded in time by the caller
(``[server] upload_timeout_seconds``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Request

from fedloom.core.store_protocols import RunWriter
from fedloom.server.answers import RequestRefusedError, refusal
from fedloom.server.recording import StoreRecorder


class AgentBusyError(Exception):
    """The agent already has an upload being read."""


class UploadSlots:
    """At most ``slots`` uploads read at once, and at most one per agent.

    Must be used from one event loop (the app's); it keeps no thread locks.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"upload slots must be at least 1, got {slots}")
        self._free = asyncio.Semaphore(slots)
        self._holders: set[str] = set()

    @property
    def holders(self) -> frozenset[str]:
        """Agents with an upload admitted (waiting for or holding a slot)."""
        return frozenset(self._holders)

    @asynccontextmanager
    async def hold(self, agent_id: str) -> AsyncIterator[None]:
        """Admit one upload of ``agent_id`` and wait for a free slot; :class:`AgentBusyError` if it has one."""
        if agent_id in self._holders:
            raise AgentBusyError(agent_id)
        self._holders.add(agent_id)
        try:
            async with self._free:
                yield
        finally:
            self._holders.discard(agent_id)


class RateLimiter:
    """Token buckets per key (``agent:ID`` or ``ip:ADDRESS``): ``burst`` at once, then ``rate`` per second.

    The aggregator spends a token on every refusal it answers (and on every registration);
    a key whose bucket is empty is answered ``429 rate_limited`` at once, before any work
    or any store write, until its bucket refills. Thread-safe (checks run in worker threads).
    At most ``max_keys`` buckets are kept: when that many exist, the full ones (keys idle for
    ``burst / rate`` seconds, which a fresh bucket would equal) are forgotten first.
    """

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, got {rate} and {burst}")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def allows(self, key: str) -> bool:
        """True while ``key`` has a token left (spends none)."""
        with self._lock:
            return self._tokens(key, self._clock()) >= 1.0

    def spend(self, key: str) -> bool:
        """Spend one token of ``key``; False (and nothing spent) when it has none left."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                return False
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            self._buckets[key] = (tokens - 1.0, now)
            return True

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0 when it has one)."""
        with self._lock:
            return max(0.0, (1.0 - self._tokens(key, self._clock())) / self.rate)

    def _forget_full(self, now: float) -> None:
        full = [k for k in self._buckets if self._tokens(k, now) >= self.burst]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


#: longest refusal reason recorded or answered: a reason may quote what the sender chose (a client id,
#: a tensor name) and must not let one upload write megabytes into the rejections table
MAX_REASON = 1000


def shorten(text: str, limit: int = MAX_REASON) -> str:
    """``text`` cut to ``limit`` characters, marked with ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RejectionBudget:
    """How many refusals of one agent in one round are written to the rejections table.

    The first ``limit`` are recorded as they are; the next one is recorded with a note that
    the rest of that agent's refusals in that round are answered but not recorded (they
    are counted in :attr:`unrecorded` and logged). This bounds the rows one agent can make
    to ``limit + 1`` per round, whatever it sends. Thread-safe.
    """

    def __init__(self, limit: int, *, max_entries: int = 100_000) -> None:
        if limit < 0:
            raise ValueError(f"the rejection budget must be >= 0, got {limit}")
        self.limit = limit
        self._max_entries = max_entries
        self._counts: dict[tuple[str | None, int], int] = {}
        self.unrecorded = 0
        self._lock = threading.Lock()

    def admit(self, agent_id: str | None, round: int, reason: str) -> str | None:
        """The reason to record for this refusal in the aggregator's current ``round`` (not the round an
        upload claims, which the sender chooses), or None when it is over the budget."""
        key = (agent_id, round)
        with self._lock:
            if len(self._counts) >= self._max_entries:
                self._counts.clear()
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            reason = shorten(reason, MAX_REASON - 100)
            if count <= self.limit:
                return reason
            if count == self.limit + 1:
                return f"{reason} [refusal {count} of this agent in this round: further ones are not recorded]"
            self.unrecorded += 1
            return None


class BudgetedRecorder(StoreRecorder):
    """A :class:`StoreRecorder` whose rejection rows (the round engine's own refusals) go through a
    :class:`RejectionBudget`, counted in the round ``current_round()`` says is open."""

    def __init__(
        self,
        store: RunWriter,
        run_id: str,
        budget: RejectionBudget,
        current_round: Callable[[], int],
        *,
        keep_local_models: bool = False,
    ) -> None:
        super().__init__(store, run_id, keep_local_models=keep_local_models)
        self.budget = budget
        self._current_round = current_round

    def update_rejected(self, round: int | None, client_id: str | None, code: str, reason: str) -> None:
        kept = self.budget.admit(client_id, self._current_round(), reason)
        if kept is not None:
            super().update_rejected(round, client_id, code, kept)


# --------------------------------------------------------------------- keys of HTTP requests


def address_key(request: Request) -> str:
    """The rate-limit key of a request before (or without) authentication: its peer address."""
    return f"ip:{request.client.host if request.client else 'unknown'}"


def rate_key(request: Request) -> str:
    """The rate-limit key of a request: its agent once authenticated, else its address."""
    key: str = getattr(request.state, "rate_key", "") or address_key(request)
    return key


def rate_limited_refusal(request: Request, key: str) -> RequestRefusedError | None:
    """The 429 to answer when ``key`` has used up its rate limit, else None (spends nothing)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.allows(key):
        return None
    detail = f"too many refused requests: wait {limiter.retry_after(key):.1f} s before sending again"
    return refusal("rate_limited", detail)
