"""What a watcher shows of a DP run (``fedloom runs show``, the dashboard): the mode recorded
with the run's strategy and the newest stored ``privacy/*`` metrics. Pure: the callers read
the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def sample_level_summary(
    epsilons: Sequence[tuple[int, float]], deltas: Sequence[tuple[int, float]]
) -> dict[str, Any] | None:
    """DP-SGD's sample-level privacy of a run from its per-round worst-client ε series (the round
    metric is already the maximum over that round's clients): the largest so far, at its δ."""
    if not epsilons:
        return None
    delta = deltas[-1][1] if deltas else None
    return {"round": epsilons[-1][0], "epsilon": max(value for _round, value in epsilons), "delta": delta}
