"""``fedloom logs``: the log records agents shipped to the aggregator, from the store.

Reads only (like ``fedloom runs``): the aggregator writes the ``agent_logs`` table as
batches arrive (``POST /v1/logs``), this prints them, oldest first, one line each;
``--follow`` keeps printing new ones until interrupted. Without ``--run`` it reads the
newest deployment run.
"""

from __future__ import annotations

import argparse
import sys
import time

from fedloom.core.agent_logs import LOG_LEVELS, AgentLogRecord
from fedloom.core.errors import StoreError
from fedloom.store import SqlStore
from fedloom.store.sql import HOME_ENV

#: records read per query
PAGE = 500
#: seconds between looks for new records with --follow
FOLLOW_INTERVAL = 1.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fedloom logs`` to the ``fedloom`` command."""
    parser = subparsers.add_parser(
        "logs",
        help="print the log records agents shipped to the aggregator",
        description="Print agents' log records from the store, oldest first (the newest deployment run by default).",
    )
    add = parser.add_argument
    add("--home", metavar="DIR", help=f"store directory (default: ${HOME_ENV} or ./fedloom-runs)")
    add("--db-url", metavar="URL", help="read a database by SQLAlchemy URL instead")
    add("--run", metavar="ID", help="a run id or a unique prefix of one (default: the newest deployment run)")
    add("--agent", metavar="NAME", help="only this agent's records")
    add("--level", type=str.upper, choices=LOG_LEVELS, help="only records at this level or above")
    add("--follow", "-f", action="store_true", help="keep printing new records until interrupted")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedloom.store import resolve_home

    store = SqlStore(args.db_url) if args.db_url else SqlStore.open_default(resolve_home(args.home))
    try:
        run_id = _run_id(store, args.run)
        after = _print_page(store, run_id, args, after=0)
        while args.follow:
            time.sleep(FOLLOW_INTERVAL)
            after = _print_page(store, run_id, args, after)
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()
    return 0


def _run_id(store: SqlStore, ref: str | None) -> str:
    if ref is not None:
        return store.get_run(ref).id
    for record in store.list_runs(limit=200):
        if record.kind == "deployment":
            return record.id
    raise StoreError("the store holds no deployment run: give --run ID (see `fedloom runs list`)")


def _print_page(store: SqlStore, run_id: str, args: argparse.Namespace, after: int) -> int:
    """Print every record after id ``after``; returns the last id printed."""
    while True:
        records = store.agent_logs(run_id, agent=args.agent, after_id=after, limit=PAGE, min_level=args.level)
        for record in records:
            print(format_record(record))
            after = record.id
        sys.stdout.flush()
        if len(records) < PAGE:
            return after


def format_record(record: AgentLogRecord) -> str:
    """One line per record (continuation lines of a traceback indented under it)."""
    stamp = record.created_at.strftime("%Y-%m-%d %H:%M:%S")
    message = record.message.replace("\n", "\n    ")
    return f"{stamp} {record.agent} {record.level} {record.logger}: {message}"
