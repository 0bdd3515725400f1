"""Limits that keep one agent (or one address) from taking the aggregator away from the others.

Upload bodies are read into memory, so at most a few are read at once (the aggregator's
memory stays O(slots x model)); the slots are a shared resource, so one agent may hold at
most one of them, and an agent is admitted to one only after its credential and its
right to upload now were checked. What holds a slot is bounded in time by the caller
(``[server] upload_timeout_seconds``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


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
