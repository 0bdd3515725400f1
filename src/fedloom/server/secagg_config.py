"""``[secagg]`` of aggregator.toml: secure aggregation for a deployed run, checked at start.

The table carries :class:`~fedloom.algorithms.secagg.SecAggSettings`' fields in the
config's own types (names are unique across tables, and the config has no booleans or
number unions), plus ``stage_timeout_seconds``, the deadline of each stage that is not
training. Everything the protocol cannot run is refused before a run is opened: the
asynchronous mode (there is no round to mask over), a strategy that needs each update
(:func:`~fedloom.algorithms.secagg.check_secure_compatible`), and any value
SecAggSettings refuses, each error naming the ``[secagg]`` field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedloom.algorithms.secagg import SecAggSettings, check_secure_compatible
from fedloom.algorithms.strategy import Strategy
from fedloom.core.errors import ConfigError

SWITCH = ("off", "on")
ROUNDINGS = ("nearest", "stochastic")


def _problem(name: str, problem: str) -> ConfigError:
    flag = "--" + name.replace("_", "-")
    return ConfigError(
        f"[secagg] {name} {problem} (set {name} in the [secagg] table of aggregator.toml,"
        f" FEDLOOM_SERVER_{name.upper()} or {flag})"
    )


@dataclass(frozen=True)
class SecAggSection:
    """``[secagg]``: ``secure_aggregation = "on"`` masks every round (docs/protocol.md, "Secure aggregation").

    ``secagg_threshold`` above 1 is a count of neighbours (a whole number), at most 1 a
    fraction of them (SecAggSettings' ``threshold``); ``rounding`` is ``"nearest"`` or
    ``"stochastic"`` (SecAggSettings' ``stochastic_rounding``).
    """

    secure_aggregation: str = "off"
    clip_range: float = 1.0
    bits: int = 24
    secagg_threshold: float = 0.67
    neighbours: int | None = None
    max_total_samples: int = 2**30
    rounding: str = "nearest"
    stage_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.secure_aggregation not in SWITCH:
            raise _problem("secure_aggregation", f"must be 'off' or 'on', got {self.secure_aggregation!r}")
        if self.rounding not in ROUNDINGS:
            raise _problem("rounding", f"must be 'nearest' or 'stochastic', got {self.rounding!r}")
        timeout = self.stage_timeout_seconds
        if not (math.isfinite(timeout) and timeout > 0):
            raise _problem("stage_timeout_seconds", f"must be a positive number, got {timeout!r}")
        self.settings()  # every value SecAggSettings refuses is refused here, at start

    @property
    def enabled(self) -> bool:
        return self.secure_aggregation == "on"

    def _threshold(self) -> int | float:
        value = self.secagg_threshold
        if value <= 1:
            return float(value)
        if not float(value).is_integer():
            raise _problem("secagg_threshold", f"above 1 is a count of neighbours and must be whole, got {value!r}")
        return int(value)

    def settings(self) -> SecAggSettings:
        """The protocol's settings; a value they refuse is reported under its ``[secagg]`` name."""
        threshold = self._threshold()
        try:
            return SecAggSettings(
                clip_range=self.clip_range,
                bits=self.bits,
                threshold=threshold,
                neighbours=self.neighbours,
                max_total_samples=self.max_total_samples,
                stochastic_rounding=self.rounding == "stochastic",
                stage_timeout_seconds=self.stage_timeout_seconds,
            )
        except ConfigError as exc:
            text = str(exc).replace("secagg threshold", "secagg_threshold").replace("stochastic_rounding", "rounding")
            raise ConfigError(f"[secagg] {text.removeprefix('secagg ')} (set it in the [secagg] table)") from None


def check_secure_run(section: SecAggSection, mode: str, strategy: Strategy) -> None:
    """Refuse, before a run opens, what secure aggregation cannot run (see the module docstring)."""
    if not section.enabled:
        return
    if mode != "sync":
        raise ConfigError(
            "[secagg] secure_aggregation = 'on' needs [run] mode = 'sync': the asynchronous mode folds in each"
            " update as it arrives, so there is no round of masked inputs to sum (set mode = 'sync')"
        )
    try:
        check_secure_compatible(strategy)
    except ConfigError as exc:
        raise ConfigError(f"[secagg] secure_aggregation = 'on': {exc}".replace("--secagg", "[secagg]")) from None
