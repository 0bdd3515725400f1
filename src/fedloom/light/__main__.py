"""``fedloom-light`` / ``python -m fedloom.light``: run a device's NumPy trainer against an aggregator.

    FEDLOOM_AGENT_TOKEN=flj_... fedloom-light --server http://edge.local:8080 \\
        --trainer device.py:make_trainer --trainer-arg site=3 --name sensor-3

``--trainer`` names a factory (``module:function`` or ``path/file.py:function``) called
with the ``--trainer-arg`` strings as keyword arguments; it returns an object with
``fit(weights, config) -> (weights, num_samples, metrics)``. The join token comes from
``--token-file`` or ``FEDLOOM_AGENT_TOKEN`` (never the command line, which other local
users can read). Exit code 0 when the run is finished or the agent was stopped by
SIGTERM/SIGINT, 1 on an error (printed).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from fedloom.light.agent import LightAgent, LightAgentError
from fedloom.light.client import LightClient, ServerRefusal, ServerUnavailable
from fedloom.light.trainer import LightTrainer
from fedloom.light.wire import WireError

TOKEN_ENV = "FEDLOOM_AGENT_TOKEN"  # noqa: S105 - the variable's name, the same one `fedloom agent` reads


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="fedloom-light", description="Run a device's NumPy trainer in a federation.")
    p.add_argument("--server", required=True, metavar="URL", help="the aggregator's (or edge's) base URL")
    p.add_argument("--trainer", required=True, metavar="SPEC", help="module:function or path/file.py:function")
    p.add_argument("--trainer-arg", action="append", default=[], metavar="KEY=VALUE", help="factory argument")
    p.add_argument("--name", required=True, help="this device's agent name (1-64 of A-Z a-z 0-9 . _ -)")
    p.add_argument("--state-dir", metavar="DIR", help="state, credential and models (default ./fedloom-light-NAME)")
    p.add_argument("--token-file", metavar="FILE", help=f"file holding the join token (else {TOKEN_ENV})")
    p.add_argument("--ca-file", metavar="PEM", help="CA certificate of the aggregator's TLS certificate")
    p.add_argument("--poll-wait", type=float, default=30.0, metavar="S", help="long-poll seconds (default 30)")
    p.add_argument("--max-retries", type=int, metavar="N", help="retries of a failed request (default: forever)")
    return p


def load_trainer(spec: str, arguments: Sequence[str]) -> LightTrainer:
    """Call the factory ``spec`` names with ``KEY=VALUE`` string arguments; ValueError naming what is wrong."""
    module_name, _, function = spec.rpartition(":")
    if not module_name or not function:
        raise ValueError(f"--trainer {spec!r} must be module:function or path/file.py:function")
    if module_name.endswith(".py"):
        path = Path(module_name)
        loader_spec = importlib.util.spec_from_file_location(f"fedloom_light_site_{path.stem}", path)
        if loader_spec is None or loader_spec.loader is None or not path.is_file():
            raise ValueError(f"--trainer file {module_name!r} does not exist")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ValueError(f"--trainer {spec!r}: {module_name} has no function {function!r}")
    kwargs: dict[str, Any] = {}
    for item in arguments:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--trainer-arg {item!r} must be KEY=VALUE")
        kwargs[key] = value
    trainer = factory(**kwargs)
    if not isinstance(trainer, LightTrainer):
        raise ValueError(f"--trainer {spec!r} returned {type(trainer).__name__}, which has no fit(weights, config)")
    return trainer


def join_token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"--token-file {args.token_file!r} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    try:
        attempts = None if args.max_retries is None else args.max_retries + 1
        client = LightClient(args.server, ca_file=args.ca_file, max_attempts=attempts)
        trainer = load_trainer(args.trainer, args.trainer_arg)
        agent = LightAgent(
            client,
            trainer,
            args.state_dir or f"fedloom-light-{args.name}",
            args.name,
            join_token(args),
            poll_wait=args.poll_wait,
        )

        def stop(_sig: int, _frame: FrameType | None) -> None:
            agent.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        outcome = agent.run()
    except (LightAgentError, ServerRefusal, ServerUnavailable, WireError, ValueError, OSError) as exc:
        print(f"fedloom-light: error: {exc}", file=sys.stderr)
        return 1
    print(f"fedloom-light: {outcome}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
