"""``fedloom certs``: the files it makes carry a working mutual-TLS federation."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fedloom.cli.main import main
from fedloom.client.transport import AggregatorClient, RetryPolicy

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="fedloom certs runs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    assert main(["certs", "ca", "--dir", str(folder), "--name", "test federation CA"]) == 0
    assert main(["certs", "server", "--dir", str(folder), "--host", "127.0.0.1", "--host", "localhost"]) == 0
    assert main(["certs", "site", "--dir", str(folder), "site-a", "site-b"]) == 0
    return folder


@contextmanager
def mtls_server(pki: Path, peers: list[dict[str, Any]]) -> Iterator[str]:
    """An HTTPS server with the made server certificate that requires a client certificate of
    the made CA, answers /v1/health and keeps each client certificate it saw in ``peers``."""

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            peers.append(self.connection.getpeercert())  # type: ignore[attr-defined]
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(pki / "ca.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_files_make_a_working_mutual_tls_connection(pki: Path) -> None:
    peers: list[dict[str, Any]] = []
    with mtls_server(pki, peers) as url:
        client_cert = (pki / "site-a.pem", pki / "site-a.key")
        retry = RetryPolicy(max_attempts=1)
        with AggregatorClient(url, ca_file=pki / "ca.pem", client_cert=client_cert, retry=retry) as client:
            assert client.health() is True  # the agent verified the server certificate for 127.0.0.1
    (peer,) = peers
    assert [v for rdn in peer["subject"] for k, v in rdn if k == "commonName"] == ["site-a"]
    assert peer["subjectAltName"] == (("DNS", "site-a"),)


def test_keys_are_private_and_certificates_public(pki: Path) -> None:
    for name in ("ca", "server", "site-a", "site-b"):
        assert stat.S_IMODE((pki / f"{name}.key").stat().st_mode) == 0o600
        assert (pki / f"{name}.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not list(pki.glob("*.csr")) and not list(pki.glob("*.ext"))  # no scratch files left behind


def test_mistakes_are_refused_with_the_fix(pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (pki / "site-a.pem").read_bytes()
    assert main(["certs", "site", "--dir", str(pki), "site-a"]) == 1
    assert "site-a.pem, site-a.key already exist(s)" in capsys.readouterr().err
    assert (pki / "site-a.pem").read_bytes() == before
    assert main(["certs", "site", "--dir", str(tmp_path / "empty"), "site-c"]) == 1
    assert "fedloom certs ca --dir" in capsys.readouterr().err
    assert main(["certs", "site", "--dir", str(pki), "two words"]) == 1
    assert "the agent's --name" in capsys.readouterr().err
    assert main(["certs", "server", "--dir", str(pki), "--name", "other", "--host", "bad host!"]) == 1
    assert "neither an IP address nor a DNS name" in capsys.readouterr().err
    assert main(["certs", "site", "--dir", str(pki), "--force", "site-a"]) == 0
    assert (pki / "site-a.pem").read_bytes() != before
