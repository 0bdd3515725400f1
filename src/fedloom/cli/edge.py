"""``fedloom edge``: an edge (intermediate) aggregator, an agent upstream and an aggregator downstream.

    FEDLOOM_AGENT_TOKEN=flj_... fedloom edge --upstream https://top.example.org:8443 \\
        --home /var/lib/fedloom-edge --port 8080 --min-agents 20 --agent-name edge-lab-3

Downstream it is ``fedloom server`` (the same flags, ``--config`` tables and
``FEDLOOM_SERVER_*`` variables, its own store in ``--home``, its own join tokens made
with ``fedloom token create --home HOME``); upstream it is ``fedloom agent`` (join token
in ``FEDLOOM_AGENT_TOKEN`` or ``--token-file``, state in ``HOME/upstream``). Each round
the top selects it for, it serves the top's model to its agents, and forwards one
update: their sample-weighted mean with their sample total. It exits once the top's run
is finished and its own agents have the final model; killed, it resumes from ``--home``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedloom.cli.server import (
    _TYPES,
    KEEP_ALIVE_SECONDS,
    _make_server,
    _process_sampler,
    _setup_logging,
    _stop_signals,
    _Stopper,
    _write_port_file,
    bind_socket,
    open_store,
    tls_arguments,
)
from fedloom.core.errors import ConfigError
from fedloom.server.config import FIELDS, AggregatorConfig, load_config

if TYPE_CHECKING:
    from fedloom.cli.edge_node import EdgeNode
    from fedloom.client.transport import AggregatorClient
    from fedloom.store import SqlStore

PORT_FILENAME = "aggregator.port"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``edge`` sub-command to the ``fedloom`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "edge",
        help="run an edge aggregator: an agent of an upstream aggregator, an aggregator for its own agents",
        description="Run an edge aggregator. Downstream flags are `fedloom server`'s; the upstream join token comes "
        "from FEDLOOM_AGENT_TOKEN or --token-file.",
    )
    add = parser.add_argument
    add("--upstream", required=True, metavar="URL", help="the upstream (top) aggregator's base URL")
    add("--agent-name", help="this edge's agent name upstream (default: edge-HOSTNAME)")
    add("--token-file", metavar="FILE", help="file holding the upstream join token (else FEDLOOM_AGENT_TOKEN)")
    add("--upstream-ca-file", metavar="PEM", help="CA certificate of the upstream aggregator's TLS certificate")
    add("--upstream-state-dir", metavar="DIR", help="the upstream agent's state (default: HOME/upstream)")
    add("--poll-wait", type=float, default=30.0, metavar="S", help="upstream long-poll seconds (default: 30)")
    add(
        "--allow-non-mean",
        action="store_true",
        help="accept a robust downstream [strategy] (median, trimmed_mean, krum, ...): the top's result is then "
        "not FedAvg over the leaves",
    )
    add("--config", metavar="FILE", help="the downstream aggregator's aggregator.toml")
    for name, (table, kind) in FIELDS.items():
        add("--" + name.replace("_", "-"), dest=name, type=_TYPES[kind], metavar=name.upper(), help=f"[{table}] {name}")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Open the downstream store, start the upstream agent and serve until both sides are done."""
    from fedloom.cli.agent import join_token
    from fedloom.client.transport import AggregatorClient
    from fedloom.server.app import create_app
    from fedloom.server.edge_setup import check_edge_config

    config = edge_config(args)
    check_edge_config(config, args.allow_non_mean)  # refused before the home or a log line is made
    args.token = None  # `fedloom agent`'s --token is not offered: a command line is readable by local users
    token = join_token(args, os.environ)
    _setup_logging()
    store, home = open_store(config)
    config = config.replace(home=str(home.resolve()))
    port_file = home / PORT_FILENAME
    stopper: _Stopper | None = None
    upstream = AggregatorClient(args.upstream, ca_file=args.upstream_ca_file)
    node: EdgeNode | None = None
    try:
        node = _node(args, config, store, upstream, home, token, lambda: stopper.stop() if stopper else None)
        sock = bind_socket(config.server.host, config.server.port)
        port = int(sock.getsockname()[1])
        _write_port_file(port_file, port)
        print(f"fedloom edge listening on port {port} (run {config.run.name}), upstream {args.upstream}", flush=True)
        stopper = _Stopper(node.aggregator.wake_waiters)
        app = create_app(node.aggregator, on_done=stopper.stop)
        server = stopper.server = _make_server(_uvicorn_config(app, config), on_exit=node.aggregator.wake_waiters)
        node.start()
        with _stop_signals():
            server.run(sockets=[sock])
    finally:
        _close(node, store, upstream, port_file)
    if node is not None and node.error is not None:
        raise ConfigError(f"the edge's upstream agent failed: {node.error}")
    return 0


def edge_config(args: argparse.Namespace) -> AggregatorConfig:
    """``fedloom server``'s layered config, with the edge's ``max_rounds`` default (the top decides)."""
    from fedloom.cli.edge_node import EDGE_MAX_ROUNDS

    overrides = {name: getattr(args, name, None) for name in FIELDS}
    config = load_config(args.config, overrides=overrides)
    chosen = overrides.get("max_rounds") is not None or "FEDLOOM_SERVER_MAX_ROUNDS" in os.environ
    if not chosen and not _file_sets(args.config, "max_rounds"):
        config = config.replace(max_rounds=EDGE_MAX_ROUNDS)
    return config


def _node(
    args: argparse.Namespace,
    config: AggregatorConfig,
    store: SqlStore,
    upstream: AggregatorClient,
    home: Path,
    token: str | None,
    on_exit: Callable[[], None],
) -> EdgeNode:
    from fedloom.cli.edge_node import EdgeNode
    from fedloom.client.agent import default_agent_name

    return EdgeNode(
        config,
        store,
        upstream,
        name=args.agent_name or f"edge-{default_agent_name()}"[:64],
        state_dir=args.upstream_state_dir or home / "upstream",
        join_token=token,
        allow_non_mean=args.allow_non_mean,
        poll_wait=args.poll_wait,
        system_sampler=_process_sampler(),
        on_exit=on_exit,
    )


def _uvicorn_config(app: Any, config: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        **tls_arguments(config),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def _close(node: Any, store: Any, upstream: Any, port_file: Path) -> None:
    """Stop the upstream agent, mark an unfinished downstream run interrupted, close everything."""
    try:
        if node is not None:
            node.stop()
            node.aggregator.close()
    finally:
        upstream.close()
        store.close()
        port_file.unlink(missing_ok=True)
        logging.getLogger("fedloom.edge").info("fedloom edge stopped")


def _file_sets(path: str | None, key: str) -> bool:
    """Whether the config file sets ``key`` (then the edge keeps it instead of its own default)."""
    if path is None:
        return False
    from fedloom.server.config import read_config_file

    return any(key in table for table in read_config_file(path).values() if isinstance(table, dict))
