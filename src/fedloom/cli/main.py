"""The ``fedloom`` command: one sub-command per module in :mod:`fedloom.cli`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from fedloom.core.errors import FedloomError

#: each module exposes ``register(subparsers)``, which adds its parser with ``func=run``.
COMMAND_MODULES = (
    "sim",
    "partition",
    "runs",
    "agent",
    "token",
    "server",
    "edge",
    "models",
    "federation",
    "certs",
    "ui",
    "logs",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedloom", description="Federated learning: simulate, deploy, inspect.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(f"fedloom.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FedloomError as exc:
        print(f"fedloom: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedloom: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
