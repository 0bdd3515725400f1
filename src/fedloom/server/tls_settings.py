"""``[tls]`` of aggregator.toml: mutual TLS (the server's own certificate is ``[server] tls_cert``/``tls_key``).

With ``client_ca_file`` the TLS handshake refuses an agent without a certificate signed
by that CA, and the API binds the certificate to the agent: its subject CN or a DNS
subjectAltName must be the agent's name (:mod:`fedloom.server.peer_identity`,
docs/deployment.md). It needs HTTPS; :func:`fedloom.server.config.load_config` checks
that once every layer (file, environment, flags) is in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TlsSection:
    """``[tls]``: the federation's CA, whose certificates agents must present (None: no mutual TLS)."""

    client_ca_file: str | None = None
