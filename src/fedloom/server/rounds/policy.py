"""When a synchronous round closes: the one close policy of simulation and deployment.

A round closes early once ``threshold`` of its selected clients delivered (never fewer
than ``min_updates``). At its deadline it does what ``on_deadline`` says:

- ``aggregate``: close with what arrived if that is at least ``min_updates``, else extend;
- ``extend``: give the round another ``deadline_seconds``;
- ``abandon``: close it without a model; the next round starts from the same one.

The policy is pure: it reads counts and times and returns a :class:`Decision`, so the
deployed aggregator (wall clock) and the simulation (simulated clock) take the same
decisions from the same inputs.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

from fedloom.core.errors import ConfigError

DeadlinePolicy = Literal["aggregate", "extend", "abandon"]
DEADLINE_POLICIES: tuple[DeadlinePolicy, ...] = ("aggregate", "extend", "abandon")


class Decision(enum.Enum):
    WAIT = "wait"
    CLOSE = "close"
    EXTEND = "extend"
    ABANDON = "abandon"


@dataclass(frozen=True)
class ClosePolicy:
    """Threshold, minimum and deadline of a synchronous round (``deadline_seconds=None``: none)."""

    threshold: float = 1.0
    min_updates: int = 1
    deadline_seconds: float | None = None
    on_deadline: DeadlinePolicy = "aggregate"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold} (set [rounds] threshold)")
        if self.min_updates < 1:
            raise ConfigError(f"min_updates must be >= 1, got {self.min_updates} (set [rounds] min_updates)")
        if self.deadline_seconds is not None and not (
            math.isfinite(self.deadline_seconds) and self.deadline_seconds > 0
        ):
            raise ConfigError(f"deadline_seconds must be a positive number, got {self.deadline_seconds}")
        if self.on_deadline not in DEADLINE_POLICIES:
            raise ConfigError(f"on_deadline must be one of {DEADLINE_POLICIES}, got {self.on_deadline!r}")

    def required(self, num_selected: int) -> int:
        """Accepted updates that close a round of ``num_selected`` early."""
        return min(num_selected, max(self.min_updates, math.ceil(self.threshold * num_selected - 1e-9)))

    def minimum(self, num_selected: int) -> int:
        """Accepted updates without which a round is never aggregated."""
        return min(num_selected, self.min_updates)

    def first_deadline(self, opened_at: float) -> float | None:
        return None if self.deadline_seconds is None else opened_at + self.deadline_seconds

    def next_deadline(self, deadline: float, now: float) -> float:
        """The deadline after an extension: one more period, at least one period after ``now``."""
        assert self.deadline_seconds is not None
        step = self.deadline_seconds
        return deadline + step if deadline + step > now else now + step

    def decide(self, received: int, num_selected: int, now: float, deadline: float | None) -> Decision:
        """What a collecting round does at ``now`` with ``received`` accepted updates
        (a round left with nobody to wait for, e.g. every selected agent revoked, is abandoned)."""
        if num_selected == 0:
            return Decision.ABANDON
        if received >= self.required(num_selected):
            return Decision.CLOSE
        if deadline is None or now < deadline:
            return Decision.WAIT
        if self.on_deadline == "abandon":
            return Decision.ABANDON
        if self.on_deadline == "aggregate" and received >= max(1, self.minimum(num_selected)):
            return Decision.CLOSE
        return Decision.EXTEND
