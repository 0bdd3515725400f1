"""Progress output for long simulations: a live line per round and a final summary table."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from fedloom.algorithms.dp.central import TARGET_REACHED
from fedloom.algorithms.dp.report import EPSILON
from fedloom.core.observe import RoundSummary, RunEnd, RunInfo

_BAR_WIDTH = 30


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:5.1f}%" if percent else f"{value:.4f}"


def round_line(summary: RoundSummary, total_rounds: int, elapsed: float) -> str:
    """``round 3/50 | clients 10/10 | train_loss 0.53 | loss 0.47 | acc 83.2% | 12.3s``."""
    m = summary.metrics
    parts = [
        f"round {summary.round}/{total_rounds}",
        f"clients {summary.num_updates}/{summary.num_selected}",
        f"train_loss {_fmt(m.get('train_loss'))}",
        f"loss {_fmt(m.get('loss'))}",
        f"acc {_fmt(m.get('accuracy'), percent=True)}",
        f"{elapsed:.1f}s",
    ]
    if EPSILON in m:  # a DP run: the ε spent so far
        parts.insert(-1, f"epsilon {m[EPSILON]:.4g}")
    return " | ".join(parts)


class ProgressPrinter:
    """A round observer: rewrites one line on a terminal (one line per round into a file or
    pipe), and prints the summary table and where the run is stored when it finishes."""

    def __init__(self, total_rounds: int, stream: TextIO | None = None) -> None:
        self.total_rounds = total_rounds
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._history: list[RoundSummary] = []
        self._started = time.perf_counter()

    def on_start(self, run: RunInfo) -> None:
        self.total_rounds = run.rounds
        self._history = []
        self._started = time.perf_counter()

    def on_round(self, summary: RoundSummary) -> None:
        self._history.append(summary)
        self.update(summary, time.perf_counter() - self._started)

    def on_finish(self, run: RunInfo, end: RunEnd) -> None:
        self.close()
        if end.status == "finished" and self._history:
            self.report(self._history, run.run_id, run.store_hint)

    def update(self, summary: RoundSummary, elapsed: float) -> None:
        line = round_line(summary, self.total_rounds, elapsed)
        if self.live:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def report(self, history: Sequence[RoundSummary], run_id: str | None, where: str = "") -> None:
        """The summary table, and where the run was stored."""
        self.stream.write(summary_table(history) + "\n")
        last = history[-1].metrics
        if last.get(TARGET_REACHED):
            self.stream.write(
                f"stopped after round {history[-1].round}: the next round would exceed the target epsilon "
                f"{last.get('privacy/target_epsilon', float('nan')):.4g} (epsilon now {last.get(EPSILON, 0.0):.4g})\n"
            )
        if run_id:
            home = f" --home {where}" if where else ""
            self.stream.write(f"run {run_id} stored; see it with: fedloom runs show {run_id[:8]}{home}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def summary_table(history: Sequence[RoundSummary], max_rows: int = 60) -> str:
    """A table of every round (or an even sample of them) with an accuracy bar, for the end of a run."""
    rows = list(history)
    if len(rows) > max_rows:
        step = -(-len(rows) // max_rows)
        rows = [*rows[:-1:step], rows[-1]]
    header = f"{'round':>5}  {'clients':>7}  {'train_loss':>10}  {'loss':>8}  {'accuracy':>8}  {'time':>7}  curve"
    lines = [header, "-" * (len(header) + _BAR_WIDTH)]
    for s in rows:
        acc = s.metrics.get("accuracy")
        bar = "#" * round(_BAR_WIDTH * acc) if acc is not None else ""
        lines.append(
            f"{s.round:>5}  {s.num_updates:>7}  {_fmt(s.metrics.get('train_loss')):>10}  "
            f"{_fmt(s.metrics.get('loss')):>8}  {_fmt(acc, percent=True):>8}  {s.seconds:>6.1f}s  {bar}"
        )
    return "\n".join(lines)
