"""Growing, bounded, jittered waits for an agent step that keeps failing the same way.

The transport already backs off network errors and 5xx answers. Some failures come
back as *successful* answers, e.g. a task naming a global model whose hash the served
model never has (a broken or hostile aggregator): retried at once, the agent would
download the model again and again, as fast as the link allows. :class:`Backoff`
spaces such retries out: the wait before attempt ``n`` is drawn from
``[cap/2, cap]`` with ``cap = min(max_delay, base_delay * 2**(n-1))``, so it always
grows (unlike full jitter, which may draw ~0 every time) and agents retrying together
drift apart. The RNG is injectable, so a test gets the same schedule every run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from fedloom.core.errors import ConfigError

__all__ = ["Backoff"]


class Backoff:
    """Counts consecutive failures of one kind and says how long to wait before the next try."""

    def __init__(self, base_delay: float = 1.0, max_delay: float = 60.0, rng: random.Random | None = None) -> None:
        if not base_delay > 0:
            raise ConfigError(f"backoff base_delay must be > 0 seconds, got {base_delay}")
        if max_delay < base_delay:
            raise ConfigError(f"backoff max_delay must be >= base_delay ({base_delay}), got {max_delay}")
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Note one more failure and return the seconds to wait before trying again."""
        self.attempts += 1
        cap = min(self.max_delay, self.base_delay * 2.0 ** min(self.attempts - 1, 64))
        return self._rng.uniform(cap / 2.0, cap)

    def reset(self) -> None:
        """The step succeeded: the next failure starts again from ``base_delay``."""
        self.attempts = 0

    def delays(self, count: int) -> Iterator[float]:
        """The next ``count`` delays (for reading a schedule; it counts them as failures)."""
        for _ in range(count):
            yield self.next_delay()
