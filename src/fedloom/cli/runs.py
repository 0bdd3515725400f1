"""``fedloom runs``: list the runs in a store, show one run's configuration and rounds, compare runs.

Every action only reads: they never create a store, so running them in the wrong
directory says "no runs" instead of leaving an empty ``fedloom-runs/`` behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedloom.algorithms.dp.report import EPSILON
from fedloom.cli.output import dumps, fmt_time, print_help, table
from fedloom.cli.runs_privacy import privacy_of, render_privacy, render_sample_privacy, sample_privacy_of
from fedloom.core.errors import StoreError
from fedloom.store import MetricRecord, RoundRecord, RunRecord, SqlStore, resolve_home
from fedloom.store.sql import DB_FILENAME, HOME_ENV

#: rejections printed by ``runs show`` (all of them go to ``--json``)
LAST_REJECTIONS = 5
_ELAPSED_NAMES = ("seconds", "elapsed_s", "elapsed")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runs list``, ``runs show ID`` and ``runs compare ID ID...`` to the ``fedloom`` command."""
    from fedloom.cli.runs_compare import register_compare  # it imports this module

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", help=f"store directory (default: ${HOME_ENV} or ./fedloom-runs)")
    common.add_argument(
        "--db-url",
        metavar="URL",
        help="read a database by SQLAlchemy URL instead, e.g. postgresql+psycopg://u:p@host/db",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser = subparsers.add_parser(
        "runs", help="list and inspect recorded runs", description="List the recorded runs, or show one in detail."
    )
    parser.set_defaults(func=lambda _args: print_help(parser))
    actions = parser.add_subparsers(dest="runs_action", metavar="ACTION")
    list_parser = actions.add_parser("list", parents=[common], help="the most recent runs, newest first")
    list_parser.add_argument("--limit", type=int, default=50, help="how many runs to list (default: 50)")
    list_parser.set_defaults(func=run_list)
    show_parser = actions.add_parser("show", parents=[common], help="one run: config, rounds, models, rejections")
    show_parser.add_argument("run_id", metavar="ID", help="a run id or a unique prefix of one")
    show_parser.set_defaults(func=run_show)
    register_compare(actions, common)


@contextmanager
def _open_store(home: str | None, db_url: str | None = None) -> Iterator[SqlStore | None]:
    """The store at ``db_url``, else under ``home``; None when no SQLite store was ever created there."""
    root = resolve_home(home)
    if db_url:
        store = SqlStore(db_url)
    elif not (root / DB_FILENAME).is_file():
        yield None
        return
    else:
        store = SqlStore.open_default(root)
    try:
        yield store
    finally:
        store.close()


def _no_store_message(home: str | None) -> str:
    root = resolve_home(home)
    return f"No runs recorded yet in {root}{'' if root.is_absolute() else f' ({Path.cwd() / root})'}."


# --------------------------------------------------------------------- runs list


def run_list(args: argparse.Namespace) -> int:
    """Print the most recent runs as a table (or JSON)."""
    with _open_store(args.home, args.db_url) as store:
        rows = [] if store is None else [_list_entry(store, run) for run in store.list_runs(limit=args.limit)]
    if args.json:
        print(dumps(rows))
    elif not rows:
        print(_no_store_message(args.home) + " Start one with `fedloom sim`.")
    else:
        headers = ["ID", "NAME", "KIND", "STATUS", "ROUNDS", "ACCURACY", "CREATED"]
        print(table(headers, [_list_row(row) for row in rows]))
    return 0


def _list_entry(store: SqlStore, run: RunRecord) -> dict[str, Any]:
    """One run's summary: its record, closed-round count and final server accuracy."""
    rounds = store.list_rounds(run.id)
    accuracy = store.metric_series(run.id, "accuracy")
    return {
        **_run_dict(run),
        "rounds": sum(1 for r in rounds if r.status == "closed"),
        "final_accuracy": accuracy[-1][1] if accuracy else None,
    }


def _list_row(entry: dict[str, Any]) -> list[str]:
    return [
        entry["id"][:8],
        entry["name"],
        entry["kind"],
        entry["status"],
        str(entry["rounds"]),
        _fmt(entry["final_accuracy"]),
        fmt_time(entry["created_at"]),
    ]


# --------------------------------------------------------------------- runs show


def run_show(args: argparse.Namespace) -> int:
    """Print one run: header, config, per-round server metrics, models and rejections."""
    with _open_store(args.home, args.db_url) as store:
        if store is None:
            raise StoreError(_no_store_message(args.home) + " Pass --home DIR to point at a store.")
        details = _show_details(store, store.get_run(args.run_id))
    if args.json:
        print(dumps(details))
    else:
        print(_render_show(details))
    return 0


def _show_details(store: SqlStore, run: RunRecord) -> dict[str, Any]:
    """Everything ``runs show`` prints, as one JSON-ready dict."""
    rejections = store.list_rejections(run.id)
    rounds = _roundtable(store.list_rounds(run.id), store.metrics(run.id, scope="server"))
    return {
        "run": _run_dict(run),
        "privacy": privacy_of(run.config, rounds),
        "sample_privacy": sample_privacy_of(rounds),
        "rounds": rounds,
        "global_models": len(store.list_global_models(run.id)),
        "rejections": len(rejections),
        "recent_rejections": [dataclasses.asdict(r) for r in rejections[-LAST_REJECTIONS:]],
    }


def _roundtable(rounds: Sequence[RoundRecord], metrics: Sequence[MetricRecord]) -> list[dict[str, Any]]:
    """One entry per round that has a round row or a server metric; the last value of a name wins."""
    by_round: dict[int, dict[str, Any]] = {}
    for record in rounds:
        by_round[record.round] = {
            "round": record.round,
            "status": record.status,
            "num_updates": record.num_updates,
            "num_samples": record.num_samples,
            "elapsed_s": _duration(record),
        }
    for metric in metrics:
        entry = by_round.setdefault(metric.round, {"round": metric.round})
        entry.setdefault("metrics", {})[metric.name] = metric.value
    return [by_round[key] for key in sorted(by_round)]


def _duration(record: RoundRecord) -> float | None:
    if record.closed_at is None:
        return None
    return (record.closed_at - record.opened_at).total_seconds()


def _elapsed(entry: dict[str, Any]) -> float | None:
    """A recorded elapsed-time metric if the run kept one, else the round's wall time."""
    metrics = entry.get("metrics", {})
    for name in _ELAPSED_NAMES:
        if name in metrics:
            return float(metrics[name])
    value = entry.get("elapsed_s")
    return None if value is None else float(value)


def _render_show(details: dict[str, Any]) -> str:
    run = details["run"]
    lines = [
        f"run       {run['id']}",
        f"name      {run['name']}",
        f"kind      {run['kind']}",
        f"status    {run['status']}",
        f"seed      {run['seed']}",
        f"created   {fmt_time(run['created_at'])}",
        f"finished  {fmt_time(run['finished_at'])}",
        *([f"privacy   {render_privacy(details['privacy'])}"] if details.get("privacy") else []),
        *([f"privacy   {render_sample_privacy(details['sample_privacy'])}"] if details.get("sample_privacy") else []),
        "",
        "config:",
        _indent(json.dumps(run["config"], indent=2, sort_keys=True)),
    ]
    if run["summary"]:
        lines += ["", "summary:", _indent(json.dumps(run["summary"], indent=2, sort_keys=True))]
    lines += ["", _render_rounds(details["rounds"]), ""]
    lines.append(f"global models: {details['global_models']}")
    lines.append(f"rejections: {details['rejections']}")
    lines += [_indent(_rejection_line(r)) for r in details["recent_rejections"]]
    return "\n".join(lines)


def _render_rounds(rounds: list[dict[str, Any]]) -> str:
    if not rounds:
        return "no rounds recorded"
    show_elapsed = any(_elapsed(entry) is not None for entry in rounds)
    private = any(EPSILON in entry.get("metrics", {}) for entry in rounds)
    headers = ["ROUND", "LOSS", "ACCURACY"] + ["EPSILON"] * private + ["UPDATES", "SAMPLES"]
    headers += ["ELAPSED_S"] if show_elapsed else []
    rows = []
    for entry in rounds:
        metrics = entry.get("metrics", {})
        row = [str(entry["round"]), _fmt(metrics.get("loss")), _fmt(metrics.get("accuracy"))]
        row += [_fmt(metrics.get(EPSILON))] * private
        row += [_fmt(entry.get("num_updates")), _fmt(entry.get("num_samples"))]
        rows.append(row + ([_fmt(_elapsed(entry), digits=2)] if show_elapsed else []))
    return table(headers, rows)


def _rejection_line(rejection: dict[str, Any]) -> str:
    where = f"round {_fmt(rejection['round'])}, client {rejection['client_id'] or '-'}"
    return f"[{rejection['code']}] {where}: {rejection['reason']}"


# --------------------------------------------------------------------- formatting


def _run_dict(run: RunRecord) -> dict[str, Any]:
    return {**dataclasses.asdict(run), "config": dict(run.config)}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
