"""Mutual TLS against a real aggregator on loopback: the handshake needs a certificate of the
federation's CA, and the API binds that certificate to the agent's name."""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from pki import Pki, make_ca, make_pki, site_cert

from conftest import Cluster, bearer

SITES = ("site-0", "site-1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    made = make_pki(tmp_path_factory.mktemp("pki"), SITES)
    make_ca(made.folder, "rogue-ca")  # another CA, and a "site-0" certificate it signed
    site_cert(made.folder, "site-0", ca="rogue-ca", file_name="rogue-site-0")
    return made


def start_mtls_server(cluster: Cluster, pki: Pki, **settings: Any) -> str:
    return cluster.start_server(
        tls_cert=str(pki.cert("server")), tls_key=str(pki.key("server")), client_ca_file=str(pki.ca), **settings
    )


def client(cluster: Cluster, pki: Pki, cert: str | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(*pki.pair(cert))
    return httpx.Client(base_url=cluster.url, verify=context, timeout=10)


def register(http: httpx.Client, name: str, token: str) -> httpx.Response:
    return http.post("/v1/agents/register", json={"name": name, "join_token": token})


def test_the_handshake_needs_a_certificate_of_the_federation_ca(cluster: Cluster, pki: Pki) -> None:
    start_mtls_server(cluster, pki)
    assert cluster.url.startswith("https://")
    with client(cluster, pki, "site-0") as http:
        assert http.get("/v1/health").json() == {"ok": True}
    for cert in (None, "rogue-site-0"):  # no certificate; a certificate of another CA
        with client(cluster, pki, cert) as http, pytest.raises(httpx.TransportError):
            http.get("/v1/health")


def test_a_certificate_only_works_for_its_own_agent(cluster: Cluster, pki: Pki) -> None:
    start_mtls_server(cluster, pki)
    tokens = cluster.tokens(*SITES)
    with client(cluster, pki, "site-0") as as_site_0, client(cluster, pki, "site-1") as as_site_1:
        own = register(as_site_0, "site-0", tokens["site-0"])
        assert own.status_code == 200, own.text
        assert as_site_0.get("/v1/status", headers=bearer(own.json()["credential"])).status_code == 200

        # site-0's certificate, site-1's name and token: refused before the token is looked at
        borrowed = register(as_site_0, "site-1", tokens["site-1"])
        assert borrowed.status_code == 403, borrowed.text
        assert borrowed.json()["error"] == "certificate_mismatch"
        assert "site-0" in borrowed.json()["detail"] and "'site-1'" in borrowed.json()["detail"]

        other = register(as_site_1, "site-1", tokens["site-1"])
        assert other.status_code == 200, other.text
        site_1 = other.json()
        # site-0's certificate with site-1's credential
        stolen = as_site_0.get("/v1/task", headers=bearer(site_1["credential"]))
        assert stolen.status_code == 403, stolen.text
        assert stolen.json()["error"] == "certificate_mismatch"

    rejections = cluster.query(lambda s, r: [(x.code, x.client_id) for x in s.list_rejections(r)])
    assert rejections == [("certificate_mismatch", None), ("certificate_mismatch", site_1["agent_id"])]
    names = cluster.query(lambda s, r: sorted(a.name for a in s.list_agents(r)))
    assert names == ["site-0", "site-1"]  # the refused registration created nothing


def test_an_agent_trains_over_mutual_tls(cluster: Cluster, pki: Pki) -> None:
    start_mtls_server(cluster, pki, max_rounds=1, min_agents=1)
    token = cluster.tokens("site-0", admin="site-0")["site-0"]
    cert, key = pki.pair("site-0")
    flags = ("--ca-file", str(pki.ca), "--tls-cert", cert, "--tls-key", key)
    agent = cluster.start_agent("site-0", 0, 1, token, upload_initial=True, extra_args=flags)
    assert cluster.wait_exit(agent, 90) == 0, agent.output()[-3000:]
    assert cluster.global_rounds() == [0, 1]
    assert cluster.query(lambda s, r: s.list_rejections(r)) == []


def test_client_ca_file_needs_https_and_an_existing_file(tmp_path: Path, pki: Pki) -> None:
    from fedloom.core.errors import ConfigError
    from fedloom.server.config import load_config

    with pytest.raises(ConfigError, match=r"\[tls\] client_ca_file needs HTTPS"):
        load_config(environ={}, overrides={"client_ca_file": str(pki.ca)})
    config = load_config(environ={"FEDLOOM_SERVER_CLIENT_CA_FILE": str(pki.ca)}, overrides=dict(
        zip(("tls_cert", "tls_key"), pki.pair("server"), strict=True)))  # fmt: skip
    assert config.tls.client_ca_file == str(pki.ca)
    from fedloom.cli.main import main

    argv = ["server", "--home", str(tmp_path), "--tls-cert", pki.pair("server")[0]]
    assert main([*argv, "--tls-key", pki.pair("server")[1], "--client-ca-file", str(tmp_path / "no-ca.pem")]) == 1


def test_mutual_tls_without_a_certificate_in_the_scope_refuses_every_agent(tmp_path: Path, pki: Pki) -> None:
    """Behind something that drops the certificate (a TLS-terminating proxy, an ASGI test client)
    the binding cannot be checked, so every registration and request is refused and recorded."""
    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():  # Starlette 1.x prefers the httpx2 fork; httpx works the same here
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient
    from fedloom.server.aggregator import Aggregator
    from fedloom.server.app import create_app
    from fedloom.server.config import AggregatorConfig
    from fedloom.store import SqlStore

    cert, key = pki.pair("server")
    config = AggregatorConfig().replace(tls_cert=cert, tls_key=key, client_ca_file=str(pki.ca))
    store = SqlStore.open_default(tmp_path)
    aggregator = Aggregator(config, store)
    try:
        token = store.create_token("site-0")
        with TestClient(create_app(aggregator, background_tick=False)) as http:
            answer = http.post("/v1/agents/register", json={"name": "site-0", "join_token": token})
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"] == "certificate_required"
            assert "--tls-cert" in answer.json()["detail"]
        assert store.list_agents(aggregator.run_id) == []
        assert [r.code for r in store.list_rejections(aggregator.run_id)] == ["certificate_required"]
    finally:
        aggregator.close()
        store.close()
