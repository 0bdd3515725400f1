"""``fedloom agent``: run a site's Trainer against an aggregator until the run finishes.

    fedloom agent --server https://agg.example.org:8443 --token flj_... \\
        --trainer examples/digits_site.py:make_trainer --trainer-arg site=1

or, with no Python of its own (docs/data.md)::

    fedloom agent --server ... --data table:/secure/local.csv --target outcome \\
        --classes no,yes --model mlp --seed 0

The trainer spec names the site's factory (``module:function`` or ``file.py:function``);
it loads the site's private data, which never leaves the machine. State (credential,
round, models) lives in ``--state-dir``, so the same command resumes after a restart and
the join token is needed only the first time. Exit code 0 when the run is finished or
the agent was stopped with SIGTERM/SIGINT; 1 on an error, which is printed.

The join token comes from ``--token-file`` or ``FEDLOOM_AGENT_TOKEN``: a command-line
argument can be read by every local user in ``/proc/PID/cmdline``, so ``--token`` still
works but logs a warning.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fedloom.cli.agent_data import add_builtin_trainer_flags, trainer_factory

if TYPE_CHECKING:
    from fedloom.client.agent import Agent
    from fedloom.client.trainer import Trainer
    from fedloom.client.transport import AggregatorClient

LOG_LEVELS = ("debug", "info", "warning", "error")
#: the environment variable that carries the join token (kept out of the command line)
TOKEN_ENV = "FEDLOOM_AGENT_TOKEN"  # noqa: S105 - a variable name, not a secret
#: environment variables standing in for --ca-file, --tls-cert and --tls-key
CA_ENV, CERT_ENV, KEY_ENV = "FEDLOOM_AGENT_CA_FILE", "FEDLOOM_AGENT_TLS_CERT", "FEDLOOM_AGENT_TLS_KEY"
SERVER_HELP = (
    "the aggregator's base URL, e.g. https://agg.example.org:8443; repeat it for a federation of several"
    " aggregators: the agent works with one (chosen by rendezvous hashing of its name) and moves to the next"
    " when that one is unreachable"
)
#: tries of one request before an agent given several aggregators moves to the next (without --max-retries)
FAILOVER_ATTEMPTS = 6


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fedloom agent`` to the ``fedloom`` command."""
    parser = subparsers.add_parser(
        "agent",
        help="run a site's trainer against an aggregator (deployment)",
        description="Register with an aggregator, then train and upload every round this agent is selected for.",
    )
    add = parser.add_argument
    add("--server", required=True, action=_ServerUrls, metavar="URL", help=SERVER_HELP)
    add(
        "--token",
        metavar="T",
        help=f"join token (`fedloom token create`); visible to other local users: prefer {TOKEN_ENV} or --token-file",
    )
    add("--token-file", metavar="FILE", help="file holding the join token (needed until the agent has registered)")
    add(
        "--trainer",
        metavar="SPEC",
        help="the site's factory: module:function or path/to/file.py:function (or --data: no Python needed)",
    )
    add("--name", help="this agent's name at the aggregator (default: the host name)")
    add(
        "--state-dir", metavar="DIR", help="where state, credential and models are kept (default: ./fedloom-agent-NAME)"
    )
    add("--ca-file", metavar="PEM", help=f"CA certificate that signed the aggregator's TLS certificate ({CA_ENV})")
    add("--tls-cert", metavar="PEM", help=f"this site's client certificate, for mutual TLS ({CERT_ENV})")
    add("--tls-key", metavar="PEM", help=f"the private key of --tls-cert ({KEY_ENV})")
    add(
        "--trainer-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the factory (a string); repeat for several",
    )
    add("--keep-stale", action="store_true", help="upload results even if a newer round began during training")
    add("--upload-initial", action="store_true", help="(admin agent) upload the initial model if the run has none")
    add("--no-system-metrics", action="store_true", help="do not report this agent's timings and resource use")
    add("--no-verify-lineage", action="store_true", help="do not check global models against the run's lineage")
    add("--no-ship-logs", action="store_true", help="do not send this agent's log records to the aggregator")
    add(
        "--max-retries",
        type=int,
        metavar="N",
        help="retries of a request that failed on the network or with 5xx (default: forever with one --server;"
        f" {FAILOVER_ATTEMPTS - 1} with several, then the agent moves to the next aggregator)",
    )
    add("--poll-wait", type=float, default=30.0, metavar="S", help="long-poll duration in seconds (default: 30)")
    add("--log-level", choices=LOG_LEVELS, default="info", help="how much to log to stderr (default: info)")
    add_builtin_trainer_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with _logging_to_stderr(args.log_level):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from fedloom.client.agent import default_agent_name
    from fedloom.client.aggregator_choice import AggregatorFailover
    from fedloom.core.errors import ConfigError

    if args.max_retries is not None and args.max_retries < 0:
        raise ConfigError(f"--max-retries must be >= 0, got {args.max_retries}")
    name = args.name or default_agent_name()
    servers = server_urls(args)
    for url in servers:
        host = urlsplit(url).hostname or ""
        if url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
            logging.getLogger("fedloom.agent").warning(
                "%s is plain HTTP: the credential and models travel unencrypted; use https:// outside a test", url
            )
    token = join_token(args, os.environ)
    factory = trainer_factory(args)  # --trainer or --data, checked before any server is contacted
    state_dir = Path(args.state_dir or f"fedloom-agent-{name}")

    @contextmanager
    def session(url: str, directory: Path) -> Iterator[Agent]:
        yield from _agent_session(args, url, directory, name, token, factory)

    if len(servers) == 1:  # one aggregator: the state directory is the agent's own, as it always was
        with session(servers[0], state_dir) as agent:
            agent.run()
        return 0
    AggregatorFailover(name, servers, state_dir, session).run()
    return 0


def _agent_session(
    args: argparse.Namespace, url: str, state_dir: Path, name: str, token: str | None, factory: Callable[[], Trainer]
) -> Iterator[Agent]:
    """One agent against one aggregator, with its log shipping, closed afterwards."""
    from fedloom.client.agent import Agent
    from fedloom.client.log_shipper import shipping_logs

    with make_client(args, server=url) as client:
        agent = Agent(
            client,
            factory,
            state_dir,
            name,
            token,
            discard_stale=not args.keep_stale,
            upload_initial=args.upload_initial,
            poll_wait=args.poll_wait,
            report_system=not args.no_system_metrics,
            verify_lineage=not args.no_verify_lineage,
        )
        with shipping_logs(client, token, enabled=not args.no_ship_logs):
            yield agent


class _ServerUrls(argparse.Action):
    """``--server`` repeated: ``args.servers`` lists every URL, ``args.server`` stays the first (a string)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        urls = [*(getattr(namespace, "servers", None) or []), str(values)]
        namespace.servers, namespace.server = urls, urls[0]


def server_urls(args: argparse.Namespace) -> list[str]:
    """The ``--server`` URLs given (one, or the aggregators of a federation)."""
    servers = getattr(args, "servers", None)
    return list(servers) if servers else [args.server]


def join_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The join token from ``--token-file``, ``--token`` (with a warning) or ``FEDLOOM_AGENT_TOKEN``."""
    from fedloom.core.errors import ConfigError

    token_file = getattr(args, "token_file", None)
    if token_file is not None and args.token is not None:
        raise ConfigError("give the join token with --token-file or --token, not both")
    if token_file is not None:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {str(path)!r} cannot be read: {exc}") from None
        if not token:
            raise ConfigError(f"--token-file {str(path)!r} is empty (put the token from `fedloom token create` in it)")
        return token
    if args.token is not None:
        logging.getLogger("fedloom.agent").warning(
            "the join token given with --token is visible to other local users (/proc/PID/cmdline, ps); "
            "pass it in %s or with --token-file instead",
            TOKEN_ENV,
        )
        return str(args.token)
    return environ.get(TOKEN_ENV) or None


def make_client(args: argparse.Namespace, server: str | None = None, **overrides: Any) -> AggregatorClient:
    """The AggregatorClient for ``server`` (default: the first ``--server``); tests pass ``transport=``
    through ``overrides``. With several aggregators a request is tried :data:`FAILOVER_ATTEMPTS` times
    unless ``--max-retries`` says otherwise, then the agent moves to the next aggregator."""
    from fedloom.client.transport import AggregatorClient, RetryPolicy

    urls = server_urls(args)
    if args.max_retries is not None:
        attempts: int | None = args.max_retries + 1
    else:
        attempts = FAILOVER_ATTEMPTS if len(urls) > 1 else None
    ca_file = getattr(args, "ca_file", None) or os.environ.get(CA_ENV) or None
    cert = getattr(args, "tls_cert", None) or os.environ.get(CERT_ENV) or None
    key = getattr(args, "tls_key", None) or os.environ.get(KEY_ENV) or None
    if (cert is None) != (key is None):
        from fedloom.core.errors import ConfigError

        raise ConfigError(f"--tls-cert and --tls-key ({CERT_ENV}, {KEY_ENV}) go together: give both or neither")
    client_cert = (cert, key) if cert is not None and key is not None else None
    retry = RetryPolicy(max_attempts=attempts)
    return AggregatorClient(server or urls[0], ca_file=ca_file, client_cert=client_cert, retry=retry, **overrides)


@contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    """Progress lines on stderr (stdout stays free for the site's code), for the duration of the command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("fedloom")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
