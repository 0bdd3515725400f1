"""Fixtures shared by every test directory: a real S3-compatible server (moto) on loopback.

``s3_endpoint`` starts one ``python -m moto.server`` process per test session on a free
loopback port and stops it at the end; ``s3_bucket`` gives each test a fresh bucket with
test credentials in the environment only (as a deployment would have them), and the
developer's own ``~/.aws`` files and instance metadata out of play. The store's blob
contract, ``SqlStore`` with S3 blobs and the deployment tests use them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import IO

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fedloom-test", "AWS_SECRET_ACCESS_KEY": "fedloom-test-secret"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a real moto S3 server process on a free loopback port, stopped at the end.

    Skips (with the reason) when moto's server extra is not installed; a server that
    does not answer within 30 s fails the test, since then something is truly wrong.
    """
    pytest.importorskip("boto3", reason="S3 blob tests need boto3 (`pip install fedloom[s3]`)")
    pytest.importorskip("moto.server", reason="S3 blob tests need moto's server (`pip install 'moto[server]'`)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_http(url, server, log)
            yield url
        finally:
            _stop(server)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


def _wait_for_http(url: str, server: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"moto server exited with {server.returncode}: {log.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {url} did not answer within 30 s")


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the moto server, with test credentials in the environment only."""
    import boto3

    for name, value in S3_TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never wait on an instance-metadata lookup
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):  # the developer's ~/.aws plays no part
        monkeypatch.setenv(name, os.devnull)
    bucket = f"fedloom-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket
