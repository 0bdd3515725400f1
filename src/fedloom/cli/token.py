"""``fedloom token``: issue, revoke and list the join tokens agents register with.

A join token is printed once, by ``token create``, and never again: the store keeps
only its SHA-256. Tokens live in the aggregator's database (global to it, not to a
run): the SQLite store under ``--home`` / ``$FEDLOOM_HOME`` / ``./fedloom-runs`` by
default, or any SQLAlchemy database given with ``--db-url``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from fedloom.cli.output import fmt_time, print_help, table
from fedloom.core.errors import StoreError
from fedloom.store import SqlStore, TokenRecord, resolve_home
from fedloom.store.schema import DEFAULT_MAX_AGENTS
from fedloom.store.sql import DB_FILENAME, HOME_ENV


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token create``, ``token revoke`` and ``token list`` to the ``fedloom`` command."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument("--home", metavar="DIR", help=f"SQLite store directory (default: ${HOME_ENV} or ./fedloom-runs)")
    where.add_argument(
        "--db-url", metavar="URL", help="the aggregator's database as a SQLAlchemy URL, e.g. postgresql+psycopg://..."
    )
    parser = subparsers.add_parser(
        "token",
        help="manage the join tokens agents register with",
        description="Issue, revoke and list join tokens. An agent exchanges a join token for its own credential.",
    )
    parser.set_defaults(func=lambda _args: print_help(parser))
    actions = parser.add_subparsers(dest="token_action", metavar="ACTION")

    create = actions.add_parser("create", parents=[common], help="issue a token (printed once)")
    create.add_argument("--name", required=True, help="who the token is for: 1-64 of A-Z a-z 0-9 . _ -")
    create.add_argument(
        "--admin",
        action="store_true",
        help="agents joining with it may upload the initial model; it also opens the dashboard",
    )
    create.add_argument(
        "--max-agents",
        type=_positive_int,
        default=DEFAULT_MAX_AGENTS,
        metavar="N",
        help=f"distinct agent names that may register with it (default: {DEFAULT_MAX_AGENTS}, one site one agent)",
    )
    create.add_argument(
        "--token-file",
        metavar="FILE",
        help="write the token to FILE (created with mode 0600, never overwritten) instead of printing it;"
        " for scripts and containers",
    )
    create.set_defaults(func=run_create)

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a token and lock out its agents")
    revoke.add_argument("--name", required=True, help="the token's name")
    revoke.set_defaults(func=run_revoke)

    listing = actions.add_parser("list", parents=[common], help="every token issued, revoked ones included")
    listing.set_defaults(func=run_list)


@contextmanager
def _open_store(args: argparse.Namespace, create: bool) -> Iterator[SqlStore | None]:
    """The store named by ``--db-url`` or ``--home``; None when no SQLite store exists and ``create`` is off."""
    if args.db_url:
        store = SqlStore(args.db_url)
    else:
        root = resolve_home(args.home)
        if not create and not (root / DB_FILENAME).is_file():
            yield None
            return
        store = SqlStore.open_default(root)
    try:
        yield store
    finally:
        store.close()


def _location(args: argparse.Namespace) -> str:
    if args.db_url:
        return "the database given with --db-url"
    root = resolve_home(args.home)
    return str(root if root.is_absolute() else root.resolve())


def run_create(args: argparse.Namespace) -> int:
    """Issue a token and print it once, with how the partner's agent uses it."""
    role = "admin" if args.admin else "agent"
    target = _new_token_file(args.token_file) if args.token_file else None
    try:
        with _open_store(args, create=True) as store:
            assert store is not None
            token = store.create_token(args.name, role=role, max_agents=args.max_agents)
    except BaseException:
        if target is not None:
            os.close(target)
            os.unlink(args.token_file)
        raise
    agents = "1 agent" if args.max_agents == 1 else f"up to {args.max_agents} agents"
    print(f"Created {role} join token {args.name!r} ({agents}) in {_location(args)}.")
    if target is not None:
        with os.fdopen(target, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        print(f"It is in {args.token_file} (mode 0600); an agent reads it with --token-file {args.token_file}.")
        return 0
    print("It is shown only this once (the store keeps only its hash); copy it now:")
    print()
    print(f"    {token}")
    print()
    print("Hand it to the partner over a secure channel. Their agent joins the aggregator with:")
    print()
    print("    fedloom agent --server URL --token TOKEN ...")
    print()
    print(f"Revoke it with `fedloom token revoke --name {args.name}`.")
    return 0


def _new_token_file(path: str) -> int:
    """A file descriptor of ``path``, created for this token only (an existing file is never overwritten)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StoreError(f"--token-file {path} already exists: remove it, or choose another file") from None
    except OSError as exc:
        raise StoreError(f"--token-file {path} cannot be created: {exc.strerror}") from None


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke the active token of a name."""
    with _open_store(args, create=False) as store:
        if store is None:
            raise StoreError(f"no token named {args.name!r}: there is no store in {_location(args)}")
        store.revoke_token(args.name)
    print(f"Revoked token {args.name!r}: agents that registered with it can no longer authenticate.")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print every token as a table: name, role, agent names used/limit, created, revoked."""
    with _open_store(args, create=False) as store:
        tokens = [] if store is None else store.list_tokens()
    if not tokens:
        print(f"No tokens in {_location(args)}. Issue one with `fedloom token create --name NAME`.")
        return 0
    print(table(["NAME", "ROLE", "AGENTS", "CREATED", "REVOKED"], [_row(t) for t in tokens]))
    return 0


def _row(token: TokenRecord) -> list[str]:
    usage = f"{token.used}/{token.max_agents}"
    return [token.name, token.role, usage, fmt_time(token.created_at), fmt_time(token.revoked_at)]


def _positive_int(text: str) -> int:
    """``--max-agents``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value
