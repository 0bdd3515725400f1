"""What ``fedloom runs show`` says about a differentially private run: mode, the current ε at
its δ, and why it stopped when its target ε was reached (all read from the stored round metrics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedloom.algorithms.dp.report import EPSILON, privacy_summary, sample_level_summary
from fedloom.algorithms.dp_sgd_settings import DELTA_METRIC, EPSILON_METRIC


def privacy_of(config: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The DP summary of ``runs show``'s round table (the newest round with an ε)."""
    private = [entry for entry in rounds if EPSILON in entry.get("metrics", {})]
    return privacy_summary(config, private[-1]["round"], private[-1]["metrics"]) if private else None


def sample_privacy_of(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """DP-SGD's sample-level ε from ``runs show``'s round table (see ``sample_level_summary``)."""

    def series(name: str) -> list[tuple[int, float]]:
        return [(e["round"], float(e["metrics"][name])) for e in rounds if name in e.get("metrics", {})]

    return sample_level_summary(series(EPSILON_METRIC), series(DELTA_METRIC))


def render_sample_privacy(summary: Mapping[str, Any]) -> str:
    """One line: ``sample-level DP-SGD: epsilon = 8.4 at delta = 1e-05 after round 10 (...)``."""
    delta = "" if summary["delta"] is None else f" at delta = {summary['delta']:.3g}"
    return (
        f"sample-level DP-SGD: epsilon = {summary['epsilon']:.4g}{delta} after round {summary['round']}"
        " (the worst client; protects one example of one client)"
    )


def render_privacy(summary: Mapping[str, Any]) -> str:
    """One line: ``central DP: epsilon = 2.1 at delta = 1e-05 after round 4 (...)``."""
    text = f"{summary['mode'] or 'user-level'} DP: epsilon = {summary['epsilon']:.4g}"
    if summary["delta"] is not None:
        text += f" at delta = {summary['delta']:.3g}"
    text += f" after round {summary['round']}"
    if summary.get("epsilon_without_sampling") is not None:
        text += f" ({summary['epsilon_without_sampling']:.4g} to whoever knows who was selected)"
    if summary["stopped_at_target"]:
        text += f"; stopped: the next round would exceed the target epsilon {summary['target_epsilon']:.4g}"
    elif summary["target_epsilon"] is not None:
        text += f" (target {summary['target_epsilon']:.4g})"
    if summary["noise_reproducible"]:
        text += "; WARNING: seeded noise (noise_seed), no privacy"
    return text
