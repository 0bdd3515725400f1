"""TLS set up wrongly is a configuration error, said once and clearly, never a retry loop.

Against a real aggregator on loopback: an agent that does not trust the server's CA,
one that reaches it under a name its certificate does not carry, one whose client
certificate the server refuses, and certificate/key files that do not belong together.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pki import Pki, make_ca, make_pki, sign, site_cert

from conftest import Cluster
from fedloom.cli.main import main
from fedloom.client.tls import TlsHandshakeError
from fedloom.client.transport import AggregatorClient, RetryPolicy
from fedloom.core.errors import ConfigError


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    made = make_pki(tmp_path_factory.mktemp("pki"), ("site-0", "site-1"))
    sign(made.folder, "elsewhere", "subjectAltName = DNS:agg.example.org\nextendedKeyUsage = serverAuth")
    make_ca(made.folder, "rogue-ca")
    site_cert(made.folder, "site-0", ca="rogue-ca", file_name="rogue-site-0")
    return made


class NoRetries:
    """A backoff ``sleep`` that fails the test: a TLS failure must not be retried."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        if self.calls >= 3:
            raise AssertionError("the TLS failure was retried like a network error")


def health(url: str, *, sleeps: NoRetries, **tls: object) -> None:
    with AggregatorClient(url, retry=RetryPolicy(max_attempts=None), sleep=sleeps, **tls) as client:  # type: ignore[arg-type]
        client.health()


def start(cluster: Cluster, pki: Pki, server: str = "server", mtls: bool = False) -> str:
    settings = {"tls_cert": str(pki.cert(server)), "tls_key": str(pki.key(server))}
    if mtls:
        settings["client_ca_file"] = str(pki.ca)
    return cluster.start_server(**settings)


def test_an_unknown_ca_stops_at_once_naming_ca_file(cluster: Cluster, pki: Pki) -> None:
    url = start(cluster, pki)
    sleeps = NoRetries()
    with pytest.raises(TlsHandshakeError, match=r"not signed by a CA the agent trusts.*--ca-file") as info:
        health(url, sleeps=sleeps)  # the system's CAs only
    assert isinstance(info.value, ConfigError) and sleeps.calls == 0


def test_a_host_name_missing_from_the_certificate_stops_at_once(cluster: Cluster, pki: Pki) -> None:
    url = start(cluster, pki, server="elsewhere")  # a certificate for agg.example.org only
    sleeps = NoRetries()
    with pytest.raises(TlsHandshakeError, match=r"127\.0\.0\.1.*not a name in the aggregator's certificate"):
        health(url, sleeps=sleeps, ca_file=pki.ca)
    assert sleeps.calls == 0


@pytest.mark.parametrize("identity", [None, "rogue-site-0"])
def test_a_refused_client_certificate_stops_at_once(cluster: Cluster, pki: Pki, identity: str | None) -> None:
    url = start(cluster, pki, mtls=True)
    sleeps = NoRetries()
    client_cert = None if identity is None else pki.pair(identity)
    with pytest.raises(TlsHandshakeError, match=r"refused this agent's client certificate.*--tls-cert"):
        health(url, sleeps=sleeps, ca_file=pki.ca, client_cert=client_cert)
    assert sleeps.calls == 0


def test_the_agent_command_exits_1_with_the_fix(cluster: Cluster, pki: Pki) -> None:
    start(cluster, pki, mtls=True)
    token = cluster.tokens("site-0")["site-0"]
    agent = cluster.start_agent("site-0", 0, 1, token, extra_args=("--ca-file", str(pki.ca)))  # no --tls-cert
    assert cluster.wait_exit(agent, 60) == 1, agent.output()[-3000:]
    output = agent.output()
    assert "client certificate" in output and "--tls-cert" in output
    assert "Traceback" not in output and "retry" not in output


def test_a_certificate_with_the_wrong_key_is_a_config_error_naming_both(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, wrong_key = str(pki.cert("site-0")), str(pki.key("site-1"))
    with pytest.raises(ConfigError, match="cannot be used together") as info:
        AggregatorClient("https://127.0.0.1:1", client_cert=(cert, wrong_key))
    assert cert in str(info.value) and wrong_key in str(info.value)

    server_cert, other_key = str(pki.cert("server")), str(pki.key("site-0"))
    argv = ["server", "--home", str(tmp_path / "home"), "--port", "0", "--tls-cert", server_cert]
    assert main([*argv, "--tls-key", other_key]) == 1
    err = capsys.readouterr().err
    assert "[server] tls_cert" in err and server_cert in err and other_key in err
    assert not (tmp_path / "home" / "fedloom.db").exists()  # refused before anything was created
    garbage = tmp_path / "garbage-ca.pem"
    garbage.write_text("not a certificate\n")
    argv += ["--tls-key", str(pki.key("server")), "--client-ca-file", str(garbage)]
    assert main(argv) == 1
    assert "[tls] client_ca_file" in capsys.readouterr().err
