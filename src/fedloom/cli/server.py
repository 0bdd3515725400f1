"""``fedloom server``: run the aggregator (HTTP API of docs/protocol.md) until SIGTERM or Ctrl-C.

Configuration comes from ``--config aggregator.toml``, ``FEDLOOM_SERVER_*`` variables and
flags (flags win). The server binds its socket itself, so with ``--port 0`` the port
the system picked is known before serving: it is printed in the banner and written to
``HOME/aggregator.port`` for launchers. Stopping marks the run ``interrupted``; starting
again with the same ``[run] name`` resumes it at its last completed round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fedloom.core.errors import ConfigError
from fedloom.server.config import FIELDS, AggregatorConfig, load_config

if TYPE_CHECKING:
    from fedloom.core.observe import RoundObserver
    from fedloom.server.aggregator import Aggregator
    from fedloom.store import SqlStore

PORT_FILENAME = "aggregator.port"
#: seconds a shutdown waits for requests in flight before cancelling them
GRACEFUL_SHUTDOWN_SECONDS = 5
_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "str | None": str,
    "float | None": float,
    "int | None": int,
    "tuple[str, ...]": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
}


#: idle seconds before the server closes a kept-alive connection. uvicorn's 5 s default
#: closes an agent's pooled connection while it prepares an upload, and a request sent
#: into that close fails ("server disconnected"); 75 s outlasts the 30 s long-poll.
KEEP_ALIVE_SECONDS = 75


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``server`` sub-command to the ``fedloom`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "server",
        help="run the aggregator server for deployed agents",
        description="Run the federated aggregator: agents register with a join token (`fedloom token create`), "
        "pull tasks, download global models and upload updates. Flags override FEDLOOM_SERVER_* variables, "
        "which override --config.",
    )
    parser.add_argument("--config", metavar="FILE", help="aggregator.toml with [server], [run], [rounds], ... tables")
    for name, (table, kind) in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, type=_TYPES[kind], metavar=name.upper(), help=f"[{table}] {name}")
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="keep serving the final model after the run finishes (default: exit 0 once agents were told)",
    )
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="do not serve the web dashboard at /dashboard/ (default: served, for admin tokens only)",
    )
    parser.set_defaults(func=run)
    return parser


def _release_model_buffers_promptly() -> None:
    """Make glibc hand freed model buffers back to the OS.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so
    after the first uploads every 10 MB model buffer comes from a per-thread heap that
    keeps it: the aggregator's RSS then grows with the number of request threads, not
    with the model. A fixed 1 MiB threshold keeps model-sized buffers in mmap (returned
    on free) and two arenas bound what small allocations keep.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_mmap_threshold, 1 << 20)
    libc.mallopt(m_arena_max, 2)


def run(args: argparse.Namespace) -> int:
    """Load the config, open the store, start (or resume) the run and serve until stopped."""
    config = load_config(args.config, overrides={name: getattr(args, name, None) for name in FIELDS})
    _check_tls_files(config)
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError("the aggregator needs the server extras: pip install 'fedloom[server]'") from None
    _setup_logging()
    _release_model_buffers_promptly()
    store, home = open_store(config)
    config = config.replace(home=str(home.resolve()))  # recorded: `models export --db-url` finds the blobs
    aggregator: Aggregator | None = None
    port_file = home / PORT_FILENAME
    try:
        aggregator = _start_aggregator(config, store, home)
        sock = bind_socket(config.server.host, config.server.port)
        port = int(sock.getsockname()[1])
        _write_port_file(port_file, port)
        print(
            f"fedloom aggregator listening on {_url(config, port)} "
            f"(run {config.federation.run_name(config.run.name)}, round {aggregator.current_round})",
            flush=True,
        )
        stopper = _Stopper(aggregator.wake_waiters)
        uv_config = uvicorn.Config(
            _app(args, aggregator, store, stopper),
            **tls_arguments(config),
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        server = stopper.server = _make_server(uv_config, on_exit=aggregator.wake_waiters)
        with _stop_signals():
            server.run(sockets=[sock])
        name = config.federation.run_name(config.run.name)
        print(f"fedloom aggregator stopped (run {name}, round {aggregator.reported_round})", flush=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            port_file.unlink()
        try:
            if aggregator is not None:
                aggregator.close()
        finally:
            store.close()
    return 0


# --------------------------------------------------------------------- pieces


def _start_aggregator(config: AggregatorConfig, store: SqlStore, home: Path) -> Aggregator:
    """The run's aggregator, watched by the ``[tracking]`` sinks and measuring its own process."""
    from fedloom.server.aggregator import Aggregator

    observers = [*evaluation_observers(config, store), *tracking_observers(config, store, home)]
    return Aggregator(config, store, observers=observers, system_sampler=_process_sampler())


def _app(args: argparse.Namespace, aggregator: Aggregator, store: SqlStore, stopper: _Stopper) -> Any:
    """The aggregator's app, with the dashboard unless ``--no-dashboard``."""
    from fedloom.server.app import create_app

    routers = [] if args.no_dashboard else [dashboard_router(store)]
    return create_app(aggregator, on_done=None if args.keep_serving else stopper.stop, extra_routers=routers)


def dashboard_router(store: SqlStore) -> Any:
    """The web dashboard over this store, for admin join tokens (``fedloom token create --name NAME --admin``)."""
    from fedloom.dashboard import build_router, join_token_verifier

    return build_router(store, join_token_verifier(store))


class _Stopper:
    """Stops the server when its run is finished and every agent was told (see ``--keep-serving``)."""

    def __init__(self, wake_waiters: Callable[[], None]) -> None:
        self.wake_waiters = wake_waiters
        self.server: Any = None

    def stop(self) -> None:
        print("fedloom aggregator: the run is finished and its agents were told; exiting", flush=True)
        if self.server is not None:
            self.server.should_exit = True
        self.wake_waiters()  # long-polls answer now instead of holding the shutdown


def evaluation_observers(config: AggregatorConfig, store: SqlStore) -> list[RoundObserver]:
    """``[evaluation] evaluator``: the aggregator's test of each global model (none when unset); the
    factory is loaded and called here, so a wrong spec stops the server before the run starts."""
    if not config.evaluation.evaluator:
        return []
    from fedloom.client.loading import load_trainer_factory, parse_trainer_args
    from fedloom.tracking.central_evaluation import CentralEvaluation

    factory = load_trainer_factory(config.evaluation.evaluator, parse_trainer_args(config.evaluation.evaluator_args))
    return [CentralEvaluation(store, factory())]


def tracking_observers(config: AggregatorConfig, store: SqlStore, home: Path) -> list[RoundObserver]:
    """``[tracking] sinks``: one feed that reads each recorded round from the store (none when empty);
    a missing tool is refused here, before the run starts."""
    if not config.tracking.sinks:
        return []
    from fedloom.tracking import TrackingFeed, TrackingSettings, build_sinks

    settings = TrackingSettings(**dataclasses.asdict(config.tracking))
    return [TrackingFeed(store, build_sinks(settings, home))]


def open_store(config: AggregatorConfig) -> tuple[SqlStore, Path]:
    """The store of ``[server] db_url`` (default SQLite in the home directory) and the home directory."""
    from fedloom.store import SqlStore, resolve_home
    from fedloom.store.blob_urls import blob_store_from_url
    from fedloom.store.blobs import make_private_dir

    home = resolve_home(config.server.home)
    try:
        blobs = None if config.server.blob_url is None else blob_store_from_url(config.server.blob_url)
    except ConfigError as exc:
        raise ConfigError(f"[server] blob_url: {exc}") from None
    if config.server.db_url is None:
        return SqlStore.open_default(home, blobs=blobs), home
    try:
        make_private_dir(home)
        if blobs is None:
            make_private_dir(home / "blobs")
    except OSError as exc:
        raise ConfigError(f"[server] home {str(home)!r} cannot be created: {exc}") from None
    if blobs is None:
        return SqlStore(config.server.db_url, blob_root=home / "blobs"), home
    return SqlStore(config.server.db_url, blobs=blobs), home


def _process_sampler() -> Callable[[], dict[str, float]]:
    """The aggregator process's CPU and memory (and GPU), for its ``system`` rows each round."""
    from fedloom.client.system_sampler import SystemSampler

    return SystemSampler().sample


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: one the system picks)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"[server] host {host!r} cannot be resolved: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc} (set [server] port to a free port, or 0 to pick one)"
        ) from None
    return sock


def _url(config: AggregatorConfig, port: int) -> str:
    host = config.server.host
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if config.server.tls else 'http'}://{shown}:{port}"


def _check_tls_files(config: AggregatorConfig) -> None:
    for name in ("tls_cert", "tls_key"):
        value = getattr(config.server, name)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"[server] {name} {value!r} does not exist (give the PEM file of the certificate/key)")
    ca = config.tls.client_ca_file
    if ca is not None and not Path(ca).is_file():
        raise ConfigError(f"[tls] client_ca_file {ca!r} does not exist (give the PEM file of the federation's CA)")
    _check_tls_contents(config)


def _check_tls_contents(config: AggregatorConfig) -> None:
    """Load the certificate, key and client CA once before anything starts, so a key that is not the
    certificate's, or a file that is not PEM, is an error naming the files instead of an ssl traceback."""
    cert, key, ca = config.server.tls_cert, config.server.tls_key, config.tls.client_ca_file
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"[server] tls_cert {cert!r} and tls_key {key!r} cannot be used together ({_reason(exc)}): the key"
                " must be the private key of that certificate, both PEM, the key unencrypted"
            ) from None
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"[tls] client_ca_file {ca!r} holds no usable PEM CA certificate ({_reason(exc)})"
            ) from None


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)


def tls_arguments(config: AggregatorConfig) -> dict[str, Any]:
    """uvicorn's TLS settings: the server's certificate and, with ``[tls] client_ca_file``, mutual TLS
    (a client certificate of that CA is required, and handed to the app to bind it to the agent)."""
    arguments: dict[str, Any] = {"ssl_certfile": config.server.tls_cert, "ssl_keyfile": config.server.tls_key}
    if config.tls.client_ca_file is not None:
        arguments.update(
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            ssl_ca_certs=config.tls.client_ca_file,
            http=_peer_certificate_protocol(),
        )
    return arguments


def _peer_certificate_protocol() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, putting each connection's verified client certificate in the ASGI scope.

    uvicorn (0.54) verifies a client certificate but does not pass it to the app (the ASGI
    TLS extension is not implemented), so this subclass reads it from the TLS transport
    once per connection and wraps the app with :func:`fedloom.server.peer_identity.with_peer_certificate`.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from fedloom.server.peer_identity import with_peer_certificate

    class PeerCertificateProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            certificate = transport.get_extra_info("peercert")
            if certificate:
                self.app = with_peer_certificate(self.app, certificate)

    return PeerCertificateProtocol


def _write_port_file(path: Path, port: int) -> None:
    """Write the port atomically, so a launcher polling the file never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, path)


def _setup_logging() -> None:
    logger = logging.getLogger("fedloom")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Own SIGINT/SIGTERM while serving: uvicorn shuts down on them and then re-raises the signal
    to the handler it found; that handler is this no-op, so the process goes on to close the run."""

    def ignore(_sig: int, _frame: FrameType | None) -> None:
        return None

    previous = {sig: signal.signal(sig, ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _make_server(config: Any, on_exit: Callable[[], None]) -> Any:
    """uvicorn's server, which also wakes long-polls as soon as a shutdown starts (uvicorn is imported
    here, not at module level, so other ``fedloom`` commands work without the server extras)."""
    import uvicorn

    class Server(uvicorn.Server):
        def __init__(self) -> None:
            super().__init__(config)
            self._loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets=sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self._loop is not None:  # runs in a signal handler: only schedule, take no lock
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(on_exit)

    return Server()
