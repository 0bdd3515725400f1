"""``fedloom server``: config errors, the real port with --port 0, TLS, and clean stops that resume."""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from aggregator_helpers import weights_of

from fedloom.cli.main import build_parser, main
from fedloom.core import to_bytes
from fedloom.store import SqlStore

BANNER = re.compile(r"fedloom aggregator listening on (https?)://([^:]+):(\d+) \(run (\S+), round (\d+)\)")


def test_parser_has_a_flag_per_config_field():
    args = build_parser().parse_args(["server", "--port", "0", "--max-rounds", "4", "--deadline-policy", "abandon"])
    assert (args.port, args.max_rounds, args.deadline_policy, args.threshold) == (0, 4, "abandon", None)


def test_config_errors_are_reported_by_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FEDLOOM_SERVER_PORT", raising=False)
    assert main(["server", "--home", str(tmp_path), "--threshold", "2"]) == 1
    assert "[rounds] threshold must be in (0, 1]" in capsys.readouterr().err
    config = tmp_path / "aggregator.toml"
    config.write_text("[rounds]\nmax_round = 3\n")
    assert main(["server", "--config", str(config)]) == 1
    assert "unknown key(s) ['max_round'] in [rounds]" in capsys.readouterr().err
    assert main(["server", "--home", str(tmp_path), "--tls-cert", "c.pem", "--tls-key", "k.pem"]) == 1
    assert "[server] tls_cert 'c.pem' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "fedloom.db").exists()  # nothing was created


class Server:
    """A ``fedloom server`` subprocess; its banner is parsed as soon as it is printed."""

    def __init__(self, home: Path, *flags: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLOOM_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fedloom.cli.main", "server", "--home", str(home), "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.process.stdout.readline()
        match = BANNER.search(line)
        if match is None:
            self.kill()
            raise AssertionError(f"no banner in {line!r}")
        self.scheme, self.host, port, self.run_name, round_no = match.groups()
        self.port, self.round = int(port), int(round_no)
        self.url = f"{self.scheme}://{self.host}:{self.port}"

    def kill(self):
        """Make sure the process is gone (after a failed test) and its pipes are closed."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        self.process.send_signal(sig)
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        return self.process.returncode, out, err


@pytest.fixture
def initial_model(tmp_path):
    path = tmp_path / "init.safetensors"
    path.write_bytes(to_bytes(weights_of(0.0)))
    return path


def test_port_zero_serves_resumes_and_stops_cleanly(tmp_path, initial_model):
    home = tmp_path / "home"
    server = Server(home, "--initial-model", str(initial_model), "--name", "cli-run", "--max-rounds", "2")
    try:
        assert (server.scheme, server.host, server.run_name, server.round) == ("http", "127.0.0.1", "cli-run", 1)
        assert server.port > 0 and (home / "aggregator.port").read_text().strip() == str(server.port)
        with SqlStore.open_default(home) as store:
            token = store.create_token("site-a")
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/v1/health").json() == {"ok": True}
            answer = client.post("/v1/agents/register", json={"name": "site-a", "join_token": token}).json()
            headers = {"Authorization": f"Bearer {answer['credential']}"}
            assert client.get("/v1/task", headers=headers).json()["state"] == "train"
            # a long-poll in flight must not hold the shutdown up
            poll = threading.Thread(target=lambda: client.get("/v1/task?wait=30", headers=headers))
            poll.start()
            time.sleep(0.3)
            started = time.monotonic()
            code, out, err = server.stop(signal.SIGTERM)
            poll.join(timeout=10)
            assert time.monotonic() - started < 4, err
    finally:
        server.kill()
    assert code == 0, err
    assert "fedloom aggregator stopped (run cli-run, round 1)" in out
    assert not (home / "aggregator.port").exists()
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        assert run.status == "interrupted" and run.name == "cli-run"

    again = Server(home, "--name", "cli-run", "--max-rounds", "2")  # no initial model needed: it is stored
    try:
        assert again.round == 1
        with httpx.Client(base_url=again.url, timeout=10) as client:
            task = client.get("/v1/task", headers=headers).json()  # the old credential still works
            assert task["state"] == "train" and task["round"] == 1
        code, out, err = again.stop(signal.SIGINT)
    finally:
        again.kill()
    assert code == 0, err
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
        assert run.status == "interrupted" and len(store.list_rounds(run.id)) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_when_given_a_certificate(tmp_path, initial_model):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server = Server(
        tmp_path / "home", "--initial-model", str(initial_model), "--tls-cert", str(cert), "--tls-key", str(key)
    )
    try:
        assert server.scheme == "https"
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=server.url, verify=trusted, timeout=10) as client:
            assert client.get("/v1/health").json() == {"ok": True}
        with pytest.raises(httpx.ConnectError), httpx.Client(base_url=server.url, timeout=10) as client:
            client.get("/v1/health")  # an unknown certificate is refused by a verifying client
        code, _, err = server.stop()
    finally:
        server.kill()
    assert code == 0, err
