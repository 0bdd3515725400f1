"""What a watcher shows of a DP run (``fedloom runs show``, the dashboard): the mode recorded
with the run's strategy and the newest stored ``privacy/*`` metrics. Pure: the callers read
the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedloom.algorithms.dp.central import PRIVACY_PREFIX, TARGET_REACHED

EPSILON = PRIVACY_PREFIX + "epsilon"
#: the metrics a summary reads (the newest value of each)
UNSAMPLED = PRIVACY_PREFIX + "epsilon_without_sampling"
SHOWN = (EPSILON, UNSAMPLED, "privacy/delta", "privacy/target_epsilon", TARGET_REACHED, "privacy/noise_reproducible")


def recorded_mode(config: Mapping[str, Any]) -> str | None:
    """The DP mode stored with a run: the strategy's ``aggregator.privacy.mode`` (simulation and
    deployment record the strategy description) or a deployment's ``[privacy] dp_mode``."""
    strategy = config.get("strategy")
    aggregator = strategy.get("aggregator") if isinstance(strategy, Mapping) else None
    privacy = aggregator.get("privacy") if isinstance(aggregator, Mapping) else None
    mode = privacy.get("mode") if isinstance(privacy, Mapping) else None
    table = config.get("privacy")
    if mode is None and isinstance(table, Mapping):
        mode = table.get("dp_mode")
    return mode if isinstance(mode, str) else None


def privacy_summary(config: Mapping[str, Any], round: int, latest: Mapping[str, float]) -> dict[str, Any] | None:
    """The newest ε (with δ, mode, round, target) from ``latest`` metrics; None without an ε."""
    if EPSILON not in latest:
        return None
    return {
        "mode": recorded_mode(config),
        "epsilon": latest[EPSILON],
        "epsilon_without_sampling": latest.get(UNSAMPLED),
        "delta": latest.get("privacy/delta"),
        "round": round,
        "target_epsilon": latest.get("privacy/target_epsilon"),
        "stopped_at_target": bool(latest.get(TARGET_REACHED)),
        "noise_reproducible": bool(latest.get("privacy/noise_reproducible")),
    }
