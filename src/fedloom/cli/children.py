"""The processes ``fedloom federation up`` (and the end-to-end tests) start: each in its own
session, its output pumped line by line, stopped as a group (SIGINT/SIGTERM, then SIGKILL).

An agent's join token goes in its environment (:func:`agent_env`), never on its command
line, where every local user could read it in ``/proc/PID/cmdline``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["AGENT_TOKEN_ENV", "STOP_GRACE_SECONDS", "Child", "agent_env", "child_env", "fedloom_command", "stop_all"]

#: seconds a child gets to stop after SIGINT/SIGTERM before it is killed
STOP_GRACE_SECONDS = 10.0
#: where ``fedloom agent`` reads its join token (see fedloom.cli.agent)
AGENT_TOKEN_ENV = "FEDLOOM_AGENT_TOKEN"  # noqa: S105 - a variable name, not a secret


def fedloom_command(*args: str) -> list[str]:
    """The command line of ``fedloom ARGS`` run with this interpreter."""
    return [sys.executable, "-m", "fedloom.cli.main", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FEDLOOM_HOME", None)
    return env


class Child:
    """A child process in its own session (process group), its output pumped line by line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        on_line: Callable[[str, str], None] | None = None,
        log_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.lines: list[str] = []
        self._on_line = on_line
        self._log = log_file.open("a", encoding="utf-8") if log_file is not None else None
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
            start_new_session=True,
            env=env or child_env(),
        )
        self._pump = threading.Thread(target=self._read, name=f"pump-{name}", daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            if self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()
            if self._on_line is not None:
                self._on_line(self.name, line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._pump.join(timeout=5)
        return code

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group (it leads its own session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process group now and reap it."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._close()

    def stop(self, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Ask the group to stop with ``sig``; SIGKILL it if it is still there after ``grace`` seconds."""
        if self.proc.poll() is None:
            self.signal_group(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        # whatever is left of the group (grandchildren included) goes now
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        self._pump.join(timeout=5)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_all(children: Sequence[Child], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop agents first (SIGINT), then the aggregator (SIGTERM); SIGKILL whatever does not stop in time."""
    for child in children:
        if child.poll() is None:
            child.signal_group(signal.SIGINT if child.name != "aggregator" else signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        child.stop(signal.SIGTERM, grace=max(0.1, deadline - time.monotonic()))


def agent_env(token: str | None) -> dict[str, str]:
    """A child environment carrying the agent's join token: unlike an argument, other local
    users cannot read it in ``/proc/PID/cmdline``."""
    env = child_env()
    env.pop(AGENT_TOKEN_ENV, None)
    if token is not None:
        env[AGENT_TOKEN_ENV] = token
    return env
