"""A throwaway PostgreSQL server for the store contract, started once per test session.

``postgres_url`` yields a ``postgresql+psycopg://`` URL of an empty database:

- ``FEDLOOM_TEST_POSTGRES_URL`` when set (an existing server; its tables are dropped
  before each test, so point it at a scratch database);
- else a private server: ``initdb`` into a fresh directory under the system temp dir,
  ``pg_ctl start`` on a free loopback port with its unix socket in that directory,
  ``fsync`` off (throwaway data), a non-UTC server time zone (so a timezone bug cannot
  hide behind UTC), and ``pg_ctl stop`` plus removal of the directory at the end.
  PostgreSQL refuses to run as root, so under root the server runs as the ``postgres``
  user, else ``fedloom-pg`` (created with ``useradd --system`` if missing).

Anything missing (binaries, psycopg, a usable user) skips the PostgreSQL tests with
the reason; it never fails the SQLite ones.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL_ENV = "FEDLOOM_TEST_POSTGRES_URL"
_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_SERVER_USERS = ("postgres", "fedloom-pg")
_DATABASE = "fedloom_test"
_SERVER_TIMEZONE = "Asia/Kathmandu"  # UTC+05:45: any mix-up of zones shows in the timestamps


def _bin_dir() -> Path | None:
    """A directory holding initdb, pg_ctl and postgres: /usr/local/bin, $PATH, then Debian's layout."""
    on_path = shutil.which("pg_ctl")
    candidates = ["/usr/local/bin", *([str(Path(on_path).parent)] if on_path else [])]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if all(os.access(Path(directory) / program, os.X_OK) for program in _PROGRAMS):
            return Path(directory)
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None for the current (non-root) user."""
    if os.geteuid() != 0:
        return None
    for name in _SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    useradd = shutil.which("useradd")
    if useradd is None:
        pytest.skip("PostgreSQL cannot run as root and there is no postgres user nor useradd to create one")
    created = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SERVER_USERS[-1]],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        pytest.skip(f"PostgreSQL cannot run as root and `useradd {_SERVER_USERS[-1]}` failed: {created.stderr.strip()}")
    return pwd.getpwnam(_SERVER_USERS[-1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _LocalServer:
    """initdb/pg_ctl around one data directory, run as ``account`` when given."""

    def __init__(self, bin_dir: Path, account: pwd.struct_passwd | None) -> None:
        self.bin_dir = bin_dir
        self.account = account
        self.root = Path(tempfile.mkdtemp(prefix="fedloom-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        if account is not None:
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        as_user: dict[str, object] = {}
        if self.account is not None:
            as_user = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.bin_dir / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            **as_user,
        )

    def init(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        """Start on a free port; another process may grab the port first, so try a few."""
        error = ""
        for _ in range(3):
            self.port = _free_port()
            options = " ".join(
                [
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={self.root}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    f"-c timezone={_SERVER_TIMEZONE}",
                    "-c max_connections=50",
                ]
            )
            log = str(self.log)
            done = self._run("pg_ctl", "start", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options)
            if done.returncode == 0:
                return
            error = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else done.stderr
        raise RuntimeError(f"pg_ctl start failed: {error.strip()}")

    def stop(self) -> None:
        """Stop the server (fast, then by signal if needed) and remove every file."""
        if (self.data / "postmaster.pid").exists():
            done = self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
            if done.returncode != 0:
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown; the postmaster takes its children down
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)


def _create_database(port: int) -> None:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {_DATABASE}")
    except psycopg.Error as exc:
        raise RuntimeError(f"could not create the test database: {exc}") from exc


def _check_reachable(url: str) -> None:
    """Skip (with the driver's reason) when the server named by ``url`` does not answer."""
    from sqlalchemy import create_engine, exc

    engine = create_engine(url)
    try:
        with engine.connect():
            pass
    except exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).splitlines()[0]
        pytest.skip(f"PostgreSQL at {POSTGRES_URL_ENV} is not reachable: {reason}")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of an empty PostgreSQL database for this session (see the module docstring)."""
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        pytest.importorskip("psycopg", reason=f"{POSTGRES_URL_ENV} is set but psycopg is not installed")
        _check_reachable(external)
        yield external
        return
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (`pip install fedloom[postgres]`)")
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL binaries ({', '.join(_PROGRAMS)}) found; set {POSTGRES_URL_ENV} to use a server")
    server = _LocalServer(bin_dir, _server_account())
    try:
        try:
            server.init()
            server.start()
            _create_database(server.port)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"could not start a local PostgreSQL server: {exc}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{_DATABASE}"
    finally:
        server.stop()
