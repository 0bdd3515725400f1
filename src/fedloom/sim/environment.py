"""The simulated world around the clients: when each one delivers, and who drops out.

A round's selected clients start together when it opens; a client that drops out is
refused ``dropped`` (recorded like any rejection), the others arrive after their
simulated training time (:func:`~fedloom.sim.clock.training_seconds`). The lifecycle,
not this module, decides what the arrivals mean (close early, deadline, extend,
abandon), exactly as for deployed agents arriving under the wall clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedloom.core.errors import ConfigError
from fedloom.sim.clock import ClientSpeeds, training_seconds


@dataclass(frozen=True)
class Arrival:
    """Client ``client_id``'s update reaches the server at simulated time ``time``."""

    time: float
    client_id: str


class SimEnvironment:
    """Client speeds and dropouts on a simulated clock (seeded: every strategy sees the same world)."""

    def __init__(self, speeds: ClientSpeeds, client_sizes: Sequence[int], epochs: int, seed: int) -> None:
        self.speeds, self.sizes, self.epochs, self.seed = speeds, list(client_sizes), epochs, seed
        self.pace = speeds.seconds_per_sample(len(self.sizes), seed)

    @classmethod
    def build(
        cls,
        speeds: ClientSpeeds | None,
        deadline_seconds: float | None,
        client_sizes: Sequence[int] | None,
        epochs: int,
        seed: int,
    ) -> SimEnvironment | None:
        """The environment when speeds or a deadline are asked for (None: every client is instant)."""
        if speeds is None and deadline_seconds is None:
            return None
        if client_sizes is None:
            raise ConfigError("simulated speeds and deadlines need client_sizes (samples per client)")
        return cls(speeds or ClientSpeeds(), client_sizes, epochs, seed)

    def seconds(self, client_id: str) -> float:
        """Simulated time for ``client_id`` to download, train and upload."""
        index = int(client_id)
        return training_seconds(self.pace[index], self.sizes[index], self.epochs, self.speeds.latency_seconds)

    def drops(self, round: int, client_id: str) -> bool:
        return self.speeds.drops(round, client_id, self.seed)

    def arrivals(self, round: int, selected: Sequence[str], start: float) -> tuple[list[Arrival], list[str]]:
        """The arrivals of the clients that deliver, in time order, and the ones that drop out."""
        dropped = [cid for cid in selected if self.drops(round, cid)]
        kept = [Arrival(start + self.seconds(cid), cid) for cid in selected if cid not in dropped]
        return sorted(kept, key=lambda a: (a.time, int(a.client_id))), dropped
