"""``fedloom runs compare ID ID...``: several runs' learning curves side by side.

A table answers "which run learned best, and how fast" (best and final value of one
server metric and the rounds they came at, and with ``--target`` the first round that
reached it); ``--plot out.png`` draws the curves. Like the rest of ``fedloom runs`` it
only reads the store.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedloom.cli.output import dumps, table
from fedloom.cli.runs import _fmt, _no_store_message, _open_store
from fedloom.core.errors import ConfigError, StoreError
from fedloom.store import RunRecord, SqlStore

#: metric names (substrings) whose smaller values are better, for ``--goal auto``
LOWER_IS_BETTER = ("loss", "error", "seconds")
GOALS = ("auto", "max", "min")


@dataclass(frozen=True)
class RunCurve:
    """One run and its metric per round (the last value recorded for a round wins, as in ``runs show``)."""

    run: RunRecord
    rounds_closed: int
    points: tuple[tuple[int, float], ...]

    @property
    def label(self) -> str:
        """How the run is named in a legend: its name and short id (names need not be unique)."""
        return f"{self.run.name} ({self.run.id[:8]})"


def register_compare(actions: Any, common: argparse.ArgumentParser) -> None:
    """Add ``runs compare`` to the ``runs`` sub-commands (``common`` holds --home / --db-url / --json)."""
    parser = actions.add_parser("compare", parents=[common], help="several runs' learning curves side by side")
    parser.add_argument("run_ids", nargs="+", metavar="ID", help="run ids or unique prefixes of them")
    parser.add_argument("--metric", default="accuracy", help="server metric to compare (default: accuracy)")
    parser.add_argument("--goal", choices=GOALS, default="auto", help="best = max or min (auto: min for losses)")
    parser.add_argument("--target", type=float, metavar="VALUE", help="also show the first round reaching VALUE")
    parser.add_argument("--plot", metavar="OUT.png", help="also draw the curves into this PNG (needs matplotlib)")
    parser.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Print the comparison table (or JSON) and write the plot if asked for."""
    plot_path = _checked_plot_path(args.plot)
    goal = resolve_goal(args.metric, args.goal)
    with _open_store(args.home, args.db_url) as store:
        if store is None:
            raise StoreError(_no_store_message(args.home) + " Pass --home DIR to point at a store.")
        curves = load_curves(store, args.run_ids, args.metric)
    entries = [summarise(curve, args.metric, goal, args.target) for curve in curves]
    if plot_path is not None:
        from fedloom.cli.runs_plot import plot_curves, save_png

        save_png(plot_curves(curves, args.metric), plot_path)
    if args.json:
        print(dumps(entries))
    else:
        print(render_table(entries, args.metric, args.target))
        if plot_path is not None:
            print(f"plot: {plot_path}")
    return 0


def resolve_goal(metric: str, goal: str) -> str:
    """``max`` or ``min``: ``auto`` means min for losses, errors and times, max otherwise."""
    if goal != "auto":
        return goal
    return "min" if any(word in metric.lower() for word in LOWER_IS_BETTER) else "max"


def load_curves(store: SqlStore, run_ids: Sequence[str], metric: str) -> list[RunCurve]:
    """Each named run's curve, in the order given; every unknown or ambiguous id is named at once."""
    runs: list[RunRecord] = []
    problems: list[str] = []
    for ref in run_ids:
        try:
            runs.append(store.get_run(ref))
        except StoreError as exc:
            problems.append(str(exc))
    if problems:
        raise StoreError("cannot compare: " + "; ".join(problems))
    ids = [run.id for run in runs]
    twice = sorted({run.id[:8] for run in runs if ids.count(run.id) > 1})
    if twice:
        raise ConfigError(f"run {', '.join(twice)} is named more than once; name each run to compare once")
    curves = [_curve(store, run, metric) for run in runs]
    if not any(curve.points for curve in curves):
        known = sorted({m.name for run in runs for m in store.metrics(run.id, scope="server")})
        raise ConfigError(
            f"none of these runs recorded the server metric {metric!r}; pass --metric with one they did:"
            f" {', '.join(known) or '(none recorded)'}"
        )
    return curves


def _curve(store: SqlStore, run: RunRecord, metric: str) -> RunCurve:
    per_round = dict(store.metric_series(run.id, metric))  # round order; the last value of a round wins
    closed = sum(1 for r in store.list_rounds(run.id) if r.status == "closed")
    return RunCurve(run=run, rounds_closed=closed, points=tuple(sorted(per_round.items())))


def summarise(curve: RunCurve, metric: str, goal: str, target: float | None) -> dict[str, Any]:
    """One row of the comparison: best and final value with their rounds, first round at ``target``."""
    finite = [(rnd, value) for rnd, value in curve.points if not math.isnan(value)]
    sign = 1.0 if goal == "max" else -1.0
    best = max(finite, key=lambda p: (sign * p[1], -p[0])) if finite else None  # ties: the earliest round
    final = curve.points[-1] if curve.points else None
    return {
        "id": curve.run.id,
        "name": curve.run.name,
        "kind": curve.run.kind,
        "status": curve.run.status,
        "rounds": curve.rounds_closed,
        "metric": metric,
        "goal": goal,
        "best": None if best is None else {"round": best[0], "value": best[1]},
        "final": None if final is None else {"round": final[0], "value": final[1]},
        "target": target,
        "target_round": None if target is None else _first_round_at(finite, target, sign),
        "series": [list(point) for point in curve.points],
    }


def _first_round_at(points: Sequence[tuple[int, float]], target: float, sign: float) -> int | None:
    return next((rnd for rnd, value in points if sign * value >= sign * target), None)


def render_table(entries: Sequence[dict[str, Any]], metric: str, target: float | None) -> str:
    """The aligned comparison table, one line per run, in the order the runs were named."""
    name = metric.upper()
    headers = ["ID", "NAME", "KIND", "STATUS", "ROUNDS", f"BEST_{name}", "BEST_ROUND", f"FINAL_{name}", "FINAL_ROUND"]
    if target is not None:
        headers.append(f"ROUND_TO_{target:g}")
    rows = []
    for entry in entries:
        best, final = entry["best"] or {}, entry["final"] or {}
        row = [entry["id"][:8], entry["name"], entry["kind"], entry["status"], str(entry["rounds"])]
        row += [_fmt(best.get("value")), _fmt(best.get("round")), _fmt(final.get("value")), _fmt(final.get("round"))]
        if target is not None:
            row.append("not reached" if entry["target_round"] is None else str(entry["target_round"]))
        rows.append(row)
    return table(headers, rows)


def _checked_plot_path(value: str | None) -> Path | None:
    """The ``--plot`` path, refused before any work unless it is a ``.png`` in an existing folder."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG image: give a path ending in .png, got {value!r}")
    if not path.parent.is_dir():
        raise ConfigError(f"--plot {value!r}: the folder {path.parent} does not exist; create it first")
    return path
