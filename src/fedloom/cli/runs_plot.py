"""The picture of ``fedloom runs compare --plot``: one curve per run, metric against round.

matplotlib is an optional extra (``fedloom[plot]``), imported only here and only when a
plot is asked for. The figure is drawn on matplotlib's Agg canvas without ``pyplot``:
no display, no global figure state, the same pixels on a laptop and on a headless server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedloom.cli.runs_compare import RunCurve
from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the PNG's size: 10 x 6 inches at 100 dots per inch = 1000 x 600 pixels
FIGSIZE_INCHES = (10.0, 6.0)
DPI = 100


def plot_curves(curves: Sequence[RunCurve], metric: str) -> Figure:
    """A titled figure with one labelled line per run (in the order given), rounds on x, ``metric`` on y."""
    figure_class = _figure_class()
    from matplotlib.ticker import MaxNLocator

    figure = figure_class(figsize=FIGSIZE_INCHES, dpi=DPI)
    axes = figure.add_subplot()
    for curve in curves:
        rounds = [rnd for rnd, _ in curve.points]
        values = [value for _, value in curve.points]
        axes.plot(rounds, values, marker="o" if len(rounds) < 30 else None, label=curve.label)
    axes.set_title(f"{metric} per round, {len(curves)} run{'s' if len(curves) != 1 else ''}")
    axes.set_xlabel("round")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    axes.set_ylabel(metric)
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend(loc="best")
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: Path) -> None:
    """Write ``figure`` as a PNG of exactly ``FIGSIZE_INCHES * DPI`` pixels."""
    figure.savefig(path, format="png", dpi=DPI)


def _figure_class() -> type[Figure]:
    """``matplotlib.figure.Figure``, or a ConfigError saying how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib, which is not installed: run `pip install 'fedloom[plot]'`") from exc
    return Figure
