"""``fedloom agent`` takes its TLS files from flags or ``FEDLOOM_AGENT_*`` variables, and refuses
half a client identity or files that do not belong together before it sends anything."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from fedloom.cli import agent as agent_cli
from fedloom.cli.main import main
from fedloom.core.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the test certificates need openssl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    assert main(["certs", "ca", "--dir", str(folder)]) == 0
    assert main(["certs", "site", "--dir", str(folder), "site-a", "site-b"]) == 0
    return folder


def args(**given: str | None) -> argparse.Namespace:
    values = {"server": "https://agg.test:8443", "max_retries": 0, "ca_file": None, "tls_cert": None, "tls_key": None}
    return argparse.Namespace(**{**values, **given})


def test_the_flags_exist() -> None:
    parser = argparse.ArgumentParser()
    agent_cli.register(parser.add_subparsers())
    parsed = parser.parse_args(
        ["agent", "--server", "https://a", "--trainer", "m:f", "--tls-cert", "c.pem", "--tls-key", "k.pem"]
    )
    assert (parsed.tls_cert, parsed.tls_key) == ("c.pem", "k.pem")


def test_the_environment_stands_in_for_the_flags(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLOOM_AGENT_CA_FILE", str(pki / "ca.pem"))
    monkeypatch.setenv("FEDLOOM_AGENT_TLS_CERT", str(pki / "site-a.pem"))
    monkeypatch.setenv("FEDLOOM_AGENT_TLS_KEY", str(pki / "site-b.key"))  # not site-a's key: refused, naming it
    with pytest.raises(ConfigError, match="cannot be used together") as info:
        agent_cli.make_client(args())
    assert "site-a.pem" in str(info.value) and "site-b.key" in str(info.value)
    monkeypatch.setenv("FEDLOOM_AGENT_TLS_KEY", str(pki / "site-a.key"))
    agent_cli.make_client(args()).close()  # the matching pair loads
    monkeypatch.setenv("FEDLOOM_AGENT_CA_FILE", str(pki / "missing-ca.pem"))
    with pytest.raises(ConfigError, match=r"missing-ca\.pem"):
        agent_cli.make_client(args())


def test_half_an_identity_is_refused(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEDLOOM_AGENT_CA_FILE", "FEDLOOM_AGENT_TLS_CERT", "FEDLOOM_AGENT_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        agent_cli.make_client(args(tls_cert=str(pki / "site-a.pem")))
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        agent_cli.make_client(args(tls_key=str(pki / "site-a.key")))
