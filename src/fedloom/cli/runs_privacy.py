"""What ``fedloom runs show`` says about a differentially private run: mode, the current ε at
its δ, and why it stopped when its target ε was reached (all read from the stored round metrics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

EPSILON = "privacy/epsilon"
_TARGET_REACHED = "privacy/target_epsilon_reached"


def _mode(config: Mapping[str, Any]) -> str | None:
    """The DP mode recorded with the run's strategy (``aggregator.privacy.mode``), if any."""
    strategy = config.get("strategy")
    aggregator = strategy.get("aggregator") if isinstance(strategy, Mapping) else None
    privacy = aggregator.get("privacy") if isinstance(aggregator, Mapping) else None
    mode = privacy.get("mode") if isinstance(privacy, Mapping) else None
    return mode if isinstance(mode, str) else None


def privacy_summary(config: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest ε (with δ, mode, round, target) of a DP run; None for a run without DP metrics."""
    private = [entry for entry in rounds if EPSILON in entry.get("metrics", {})]
    if not private:
        return None
    last = private[-1]
    metrics = last["metrics"]
    return {
        "mode": _mode(config),
        "epsilon": metrics[EPSILON],
        "delta": metrics.get("privacy/delta"),
        "round": last["round"],
        "target_epsilon": metrics.get("privacy/target_epsilon"),
        "stopped_at_target": bool(metrics.get(_TARGET_REACHED)),
        "noise_reproducible": bool(metrics.get("privacy/noise_reproducible")),
    }


def render_privacy(summary: Mapping[str, Any]) -> str:
    """One line: ``central DP: epsilon = 2.1 at delta = 1e-05 after round 4 (...)``."""
    text = f"{summary['mode'] or 'user-level'} DP: epsilon = {summary['epsilon']:.4g}"
    if summary["delta"] is not None:
        text += f" at delta = {summary['delta']:.3g}"
    text += f" after round {summary['round']}"
    if summary["stopped_at_target"]:
        text += f"; stopped: the next round would exceed the target epsilon {summary['target_epsilon']:.4g}"
    elif summary["target_epsilon"] is not None:
        text += f" (target {summary['target_epsilon']:.4g})"
    if summary["noise_reproducible"]:
        text += "; WARNING: seeded noise (noise_seed), no privacy"
    return text
