"""The parameters of secure aggregation, validated once, where the user set them.

Every field is checked on construction so a bad value fails before a round starts, with a
message that names the field and the fix. The same object configures the simulated and
(later) the deployed protocol, so both refuse the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedloom.core.errors import ConfigError

#: the ring is Z_{2^64}: every masked word is a uint64
RING_BITS = 64
#: the protocol's stages, in order; a simulated client may drop out at any of them
STAGES = ("advertise", "share", "collect", "unmask")
#: quantisation bit widths that leave room in the ring for sums over many samples
MIN_BITS, MAX_BITS = 2, 48


@dataclass(frozen=True)
class SecAggSettings:
    """Secure aggregation's parameters (docs/privacy.md, "Secure aggregation").

    ``clip_range`` c: each element of a client's update delta is clipped to [-c, c] and
    quantised to ``bits`` bits, so an element inside the range is off by at most
    c / (2^bits - 1). ``threshold``: how many of a client's neighbours must answer for its
    secrets to be rebuilt, as an absolute count (int) or a fraction of the neighbours
    (float in (0.5, 1]). ``neighbours`` k: the degree of the communication graph (None:
    every selected client, i.e. the complete graph of Bonawitz et al. 2017).
    ``max_total_samples``: the largest sum of sample counts one round may carry; the ring
    must hold ``(2^bits - 1) * max_total_samples`` without wrapping. ``stochastic_rounding``
    rounds up or down at random (unbiased, error below one step) instead of to nearest.
    ``stage_timeout_seconds`` is for deployment (how long the server waits per stage).
    """

    clip_range: float = 1.0
    bits: int = 24
    threshold: int | float = 0.67
    neighbours: int | None = None
    max_total_samples: int = 2**30
    stochastic_rounding: bool = False
    stage_timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.clip_range, bool) or not isinstance(self.clip_range, (int, float)):
            raise ConfigError(f"secagg clip_range must be a number, got {self.clip_range!r}")
        if not (math.isfinite(self.clip_range) and 0 < self.clip_range <= 1e12):
            raise ConfigError(f"secagg clip_range must be finite and in (0, 1e12], got {self.clip_range}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ConfigError(f"secagg bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {self.bits!r}")
        self._check_threshold()
        if self.neighbours is not None and (
            isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 2
        ):
            raise ConfigError(f"secagg neighbours must be an integer >= 2 (or None for all), got {self.neighbours!r}")
        self._check_ring_room()
        timeout = self.stage_timeout_seconds
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"secagg stage_timeout_seconds must be > 0, got {timeout}")

    def _check_threshold(self) -> None:
        value = self.threshold
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"secagg threshold must be an int (count) or a float (fraction), got {value!r}")
        if isinstance(value, int) and value < 2:
            raise ConfigError(f"secagg threshold as a count must be >= 2, got {value}")
        if isinstance(value, float) and not 0.5 < value <= 1.0:
            raise ConfigError(
                f"secagg threshold as a fraction must be in (0.5, 1], got {value}: at or below one half, two"
                " disjoint groups could each rebuild a different secret of the same client"
            )

    def _check_ring_room(self) -> None:
        total = self.max_total_samples
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ConfigError(f"secagg max_total_samples must be an integer >= 1, got {total!r}")
        need = self.bits + math.ceil(math.log2(total)) if total > 1 else self.bits
        if need >= RING_BITS:
            raise ConfigError(
                f"secagg bits ({self.bits}) + ceil(log2(max_total_samples={total})) = {need} must be < {RING_BITS}:"
                " the sum would wrap around the ring; lower bits or max_total_samples"
            )

    def degree(self, num_clients: int) -> int:
        """The graph degree for a round of ``num_clients`` (all others when ``neighbours`` is None or larger)."""
        others = num_clients - 1
        return others if self.neighbours is None else min(self.neighbours, others)

    def threshold_for(self, degree: int) -> int:
        """How many of ``degree`` neighbours must hold a share for a secret to be rebuilt."""
        if isinstance(self.threshold, int):
            return self.threshold
        return max(2, math.ceil(self.threshold * degree - 1e-9))

    def describe(self) -> dict[str, object]:
        """The settings as a run's config records them."""
        return {
            "clip_range": self.clip_range,
            "bits": self.bits,
            "threshold": self.threshold,
            "neighbours": self.neighbours,
            "max_total_samples": self.max_total_samples,
            "stochastic_rounding": self.stochastic_rounding,
        }
