"""``fedloom ui``: the web dashboard over a store of (simulated) runs, on loopback by default.

    fedloom ui --home fedloom-runs [--host 127.0.0.1] [--port 8080] [--token-file FILE]

There are no join tokens in a simulation store, so the dashboard is guarded by a random
one-time credential made at start: printed in the URL (``.../dashboard/#token=...``; the
fragment never reaches a server log), or, with ``--token-file``, written to that file
(owner-readable only) and left out of what is printed. The store is only read.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedloom.core.errors import ConfigError, StoreError
from fedloom.store.sql import DB_FILENAME, HOME_ENV

DEFAULT_PORT = 8080
LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: the ``--port 0`` port the system picked, for launchers and tests
PORT_FILENAME = "ui.port"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ui`` to the ``fedloom`` command."""
    parser = subparsers.add_parser(
        "ui",
        help="serve the web dashboard over a store of runs",
        description="Serve the read-only web dashboard (runs, rounds, clients, models) over a store directory.",
    )
    parser.add_argument("--home", metavar="DIR", help=f"store directory (default: ${HOME_ENV} or ./fedloom-runs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0 picks one)")
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="write the one-time credential to FILE (mode 0600) instead of printing it in the URL",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Open the store, make the credential, bind, print the URL and serve until Ctrl-C."""
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError("the dashboard needs the server extras: pip install 'fedloom[server]'") from None
    from fedloom.cli.server import bind_socket
    from fedloom.dashboard import new_one_time_secret, secret_verifier
    from fedloom.dashboard.standalone import standalone_app
    from fedloom.store import SqlStore, resolve_home

    home = resolve_home(args.home)
    if not (home / DB_FILENAME).is_file():
        raise StoreError(f"no store in {home} (no {DB_FILENAME}): give --home DIR of a store, e.g. from `fedloom sim`")
    secret = new_one_time_secret()
    store = SqlStore.open_default(home)
    try:
        app = standalone_app(store, secret_verifier(secret))
        sock = bind_socket(args.host, args.port)
        port = int(sock.getsockname()[1])
        _announce(args, home, port, secret)
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()
    return 0


def _announce(args: argparse.Namespace, home: Path, port: int, secret: str) -> None:
    """Print where the dashboard is, with the credential unless it went to ``--token-file``."""
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}/dashboard/"
    if args.token_file:
        _write_private(Path(args.token_file), secret + "\n")
        print(f"fedloom dashboard on {url} (store {home}; credential in {args.token_file})", flush=True)
    else:
        print(f"fedloom dashboard on {url}#token={secret} (store {home}; Ctrl-C stops it)", flush=True)
    _write_private(home / PORT_FILENAME, f"{port}\n")
    if args.host not in LOOPBACK:
        print(
            f"fedloom ui: warning: listening on {args.host}, reachable from other machines over plain HTTP;"
            " the credential travels unencrypted (prefer the default 127.0.0.1 and an SSH tunnel)",
            file=sys.stderr,
            flush=True,
        )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, replacing it atomically."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
