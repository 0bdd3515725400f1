"""``fedloom federation up``: a whole deployed federation on this machine, for trying it out.

    fedloom federation up --agents 3 --example digits --rounds 5

It creates a store home (a new temporary directory unless ``--home``), issues one join
token per agent (the first one admin: that agent uploads the initial model), starts the
aggregator (``fedloom server``) on loopback with a port the system picks, starts one
``fedloom agent`` process per site of the example, prefixes every line they print with
the name of the process (``[aggregator] ...``, ``[site-1] ...``), prints a status line
from ``GET /v1/status`` every few seconds, and waits until the run is finished. It then
prints the accuracy of the last global model on the example's test split. Every child
runs in its own process group and is stopped (SIGINT/SIGTERM, then SIGKILL) when the
command ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from fedloom.cli.children import (
    Child,
    agent_env,
    fedloom_command,
    stop_all,
)
from fedloom.cli.output import print_help
from fedloom.core.errors import ConfigError, FedloomError

EXAMPLES = ("digits",)
PORT_FILENAME = "aggregator.port"
RUN_KIND = "deployment"
_print_lock = threading.Lock()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``federation up`` to the ``fedloom`` command."""
    parser = subparsers.add_parser(
        "federation",
        help="run an aggregator and several agents on this machine (a local trial)",
        description="Start a local federation: one aggregator and N agent processes on loopback.",
    )
    parser.set_defaults(func=lambda _args: print_help(parser))
    actions = parser.add_subparsers(dest="federation_action", metavar="ACTION")
    up = actions.add_parser("up", help="start the aggregator and the agents, wait for the run, tear down")
    up.add_argument("--agents", type=int, default=3, metavar="N", help="how many agents (sites) to start (default: 3)")
    up.add_argument(
        "--example", choices=EXAMPLES, default="digits", help="the example each site runs (default: digits)"
    )
    up.add_argument("--rounds", type=int, default=5, metavar="N", help="rounds of the run (default: 5)")
    up.add_argument("--home", metavar="DIR", help="store directory (default: a new temporary directory)")
    up.add_argument("--port", type=int, default=0, help="the aggregator's port on 127.0.0.1 (default: 0, any free one)")
    up.add_argument("--lr", type=float, default=0.5, help="local learning rate sent to the agents (default: 0.5)")
    up.add_argument("--epochs", type=int, default=2, help="local epochs per round (default: 2)")
    up.add_argument("--batch-size", type=int, default=16, help="local batch size (default: 16)")
    up.add_argument(
        "--deadline-seconds", type=float, default=60.0, help="round deadline; then aggregate what arrived (default: 60)"
    )
    up.add_argument(
        "--status-interval", type=float, default=5.0, metavar="S", help="seconds between status lines (default: 5)"
    )
    up.add_argument(
        "--timeout", type=float, default=900.0, metavar="S", help="give up after this many seconds (default: 900)"
    )
    up.set_defaults(func=run_up)


class _Interrupts:
    """Ctrl-C / SIGTERM for the launcher, delivered only at safe points of its main thread.

    A KeyboardInterrupt raised at an arbitrary bytecode can land while the main thread
    holds a lock (the print lock between its acquire and the ``with`` block taking
    ownership, or a Popen's waitpid lock inside ``poll``), leaving it held: the teardown's
    own message and every child's output thread would then wait on it forever. So the
    handler only notes the signal, and the launcher's loops (and every line it prints)
    raise it at a point where nothing is held.
    """

    def __init__(self) -> None:
        self.pending = False

    def handler(self, _sig: int, _frame: FrameType | None) -> None:
        self.pending = True

    def deliver_pending(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


_interrupts = _Interrupts()


def say(name: str, text: str, stream: IO[str] | None = None) -> None:
    """Print one line prefixed with ``[name]`` (lines of different children never interleave)."""
    out = stream or sys.stdout
    with _print_lock:
        print(f"[{name}] {text}", file=out, flush=True)
    if threading.current_thread() is threading.main_thread():
        _interrupts.deliver_pending()


# --------------------------------------------------------------------- starting the federation


def wait_for_port(home: Path, server: Child, timeout: float) -> int:
    """The port the aggregator wrote to ``HOME/aggregator.port`` once it listens."""
    path = home / PORT_FILENAME
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _interrupts.deliver_pending()
        if path.is_file():
            text = path.read_text().strip()
            if text.isdigit():
                return int(text)
        code = server.poll()
        if code is not None:
            tail = "\n".join(server.lines[-20:])
            raise FedloomError(f"the aggregator exited with code {code} before listening:\n{tail}")
        time.sleep(0.05)
    raise FedloomError(f"the aggregator did not write {path} within {timeout:g} s")


def start_aggregator(
    home: Path,
    *,
    port: int = 0,
    settings: dict[str, Any] | None = None,
    on_line: Callable[[str, str], None] | None = None,
    timeout: float = 60.0,
) -> tuple[Child, str]:
    """Start ``fedloom server`` on 127.0.0.1 with store ``home``; returns it and its base URL
    (``https://`` when ``settings`` name a ``tls_cert``)."""
    with contextlib.suppress(FileNotFoundError):
        (home / PORT_FILENAME).unlink()  # a stale one from a killed server would point nowhere
    flags = ["--home", str(home), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in (settings or {}).items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    server = Child("aggregator", fedloom_command("server", *flags), on_line=on_line, log_file=home / "aggregator.log")
    try:
        bound = wait_for_port(home, server, timeout)
    except BaseException:
        server.stop()
        raise
    scheme = "https" if (settings or {}).get("tls_cert") else "http"
    return server, f"{scheme}://127.0.0.1:{bound}"


def find_example(name: str) -> Path:
    """The example's site module (``examples/NAME_site.py`` of the source tree or the current directory)."""
    filename = f"{name}_site.py"
    candidates = [
        Path(__file__).resolve().parents[3] / "examples" / filename,
        Path.cwd() / "examples" / filename,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shown = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"example {name!r} needs {filename}, which is in fedloom's source tree (examples/); not found in: {shown}"
        " (run from a checkout of fedloom)"
    )


def agent_command(
    url: str,
    name: str,
    state_dir: Path,
    trainer: Path,
    trainer_args: dict[str, str],
    *,
    upload_initial: bool = False,
    poll_wait: float = 2.0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of a ``fedloom agent``; its join token goes in :func:`agent_env`, never here."""
    argv = ["agent", "--server", url, "--name", name, "--state-dir", str(state_dir), "--trainer"]
    argv += [f"{trainer}:make_trainer", "--poll-wait", f"{poll_wait:g}"]
    for key, value in trainer_args.items():
        argv += ["--trainer-arg", f"{key}={value}"]
    if upload_initial:
        argv.append("--upload-initial")
    return fedloom_command(*argv, *extra_args)


def read_credential(state_dir: Path) -> str | None:
    """The credential an agent saved in ``STATE_DIR/state.json`` (None before it registered)."""
    try:
        data = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None
    credential = data.get("credential") if isinstance(data, dict) else None
    return credential if isinstance(credential, str) else None


def get_status(url: str, credential: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """``GET /v1/status``; None when the aggregator does not answer."""
    import httpx

    try:
        response = httpx.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {credential}"}, timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    data: dict[str, Any] = response.json()
    return data


# --------------------------------------------------------------------- evaluation


def final_accuracy(home: Path, run_name: str = "default") -> tuple[int, float]:
    """Round and test accuracy (digits test split) of the newest global model of run ``run_name``."""
    import fedloom
    from fedloom.core.reserved import model_part
    from fedloom.data import load_digits
    from fedloom.store import SqlStore

    store = SqlStore.open_default(home)
    try:
        run = store.find_run(run_name, kind=RUN_KIND)
        if run is None:
            raise FedloomError(f"no run {run_name!r} in {home}")
        latest = store.latest_global_model(run.id)
        if latest is None:
            raise FedloomError(f"run {run_name!r} has no global model")
        weights = model_part(store.load_global_model(run.id, latest.round))  # without strategy state tensors
    finally:
        store.close()
    data = load_digits()
    trainer = fedloom.NumpyLogisticTrainer(
        data.train.x, data.train.y, data.num_classes, x_eval=data.test.x, y_eval=data.test.y
    )
    accuracy = trainer.evaluate(weights, fedloom.EvalConfig())["accuracy"]
    return latest.round, float(accuracy)


# --------------------------------------------------------------------- the command


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM to the launcher tear down alike (never in the middle of a printed line)."""
    previous = {sig: signal.signal(sig, _interrupts.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_up_args(args: argparse.Namespace) -> None:
    if args.agents < 1:
        raise ConfigError(f"--agents must be >= 1, got {args.agents}")
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {args.rounds}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0-65535, got {args.port}")


def _issue_tokens(home: Path, names: Sequence[str]) -> dict[str, str]:
    """One join token per site in the store at ``home``; the first site's is admin (it uploads the model)."""
    from fedloom.store import SqlStore

    store = SqlStore.open_default(home)
    try:
        return {name: store.create_token(name, role="admin" if i == 0 else "agent") for i, name in enumerate(names)}
    finally:
        store.close()


def _store_home(args: argparse.Namespace) -> Path:
    """``--home``, or a new temporary directory, created and made absolute (children get paths under it)."""
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="fedloom-federation-"))
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def _server_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The aggregator settings the command's flags choose (every round waits for all the agents; the
    aggregator tests each global model on the example's whole test split: one site of one)."""
    return {
        **{"max_rounds": args.rounds, "min_agents": args.agents, "lr": args.lr, "epochs": args.epochs},
        **{"batch_size": args.batch_size, "deadline_seconds": args.deadline_seconds, "deadline_policy": "aggregate"},
        **{"evaluator": f"{find_example(args.example)}:make_trainer", "evaluator_args": "site=0,sites=1"},
    }


def run_up(args: argparse.Namespace) -> int:
    """Start the federation, wait for the run to finish, print the final accuracy, tear down."""
    _check_up_args(args)
    trainer = find_example(args.example)
    home = _store_home(args)
    say("federation", f"store home: {home}")
    names = [f"site-{i}" for i in range(args.agents)]
    tokens = _issue_tokens(home, names)

    def echo(name: str, line: str) -> None:
        say(name, line)

    settings = _server_settings(args)
    children: list[Child] = []
    with _sigterm_as_interrupt():
        try:
            server, url = start_aggregator(home, port=args.port, settings=settings, on_line=echo)
            children.append(server)
            say("federation", f"aggregator at {url}")
            for i, name in enumerate(names):
                argv = agent_command(
                    url,
                    name,
                    home / "agents" / name,
                    trainer,
                    {"site": str(i), "sites": str(args.agents)},
                    upload_initial=i == 0,
                )
                children.insert(len(children) - 1, Child(name, argv, on_line=echo, env=agent_env(tokens[name])))
            code = _supervise(args, home, url, server, [c for c in children if c is not server])
            if code != 0:
                return code
        except KeyboardInterrupt:
            say("federation", "interrupted: stopping every process", sys.stderr)
            return 130
        finally:
            with _interrupts_ignored():  # a second Ctrl-C must not cut the teardown short
                stop_all(children)
    round_no, accuracy = final_accuracy(home)
    say("federation", f"run finished: global model of round {round_no}")
    print(f"final accuracy: {accuracy:.4f}", flush=True)
    return 0


def _supervise(args: argparse.Namespace, home: Path, url: str, server: Child, agents: list[Child]) -> int:
    """Print status lines until the agents are done; 0 when the run finished, 1 on a failure."""
    end = time.monotonic() + args.timeout
    next_status = time.monotonic()
    credential_dir = home / "agents" / agents[0].name
    finished = False
    while True:
        _interrupts.deliver_pending()
        now = time.monotonic()
        if now >= end:
            say("federation", f"the run did not finish within {args.timeout:g} s", sys.stderr)
            return 1
        if server.poll() not in (None, 0):  # 0: it finished the run and exits by itself
            say("federation", f"the aggregator exited with code {server.poll()}", sys.stderr)
            return 1
        failed = [a for a in agents if a.poll() not in (None, 0)]
        if failed:
            for agent in failed:
                say("federation", f"{agent.name} exited with code {agent.poll()}", sys.stderr)
            return 1
        if now >= next_status:
            next_status = now + args.status_interval
            credential = read_credential(credential_dir)
            status = get_status(url, credential) if credential else None
            if status is not None:
                finished = status.get("state") == "finished"
                say(
                    "status",
                    f"round {status['round']}/{status['max_rounds']} {status['state']}: "
                    f"{status['rounds_completed']} completed, {status['agents']} agent(s), "
                    f"{status['received']}/{len(status['selected'])} update(s) received",
                )
        if all(a.poll() == 0 for a in agents):
            if not finished:
                credential = read_credential(credential_dir)
                status = get_status(url, credential) if credential else None
                if status is not None and status.get("state") != "finished":
                    say("federation", f"the agents exited but the run is {status.get('state')}", sys.stderr)
                    return 1
            say("federation", "every agent finished")
            return 0
        time.sleep(0.2)
