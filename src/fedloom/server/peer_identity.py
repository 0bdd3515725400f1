"""Mutual TLS: which agent names a connection's verified client certificate vouches for.

The TLS handshake (``[tls] client_ca_file``) only proves that a certificate was signed
by the federation's CA. Binding it to an identity is this module's job: a certificate
vouches for the names in its subject CN and its DNS subjectAltNames, and the API accepts
a registration or an authenticated request only when the agent's name is one of them.
So a site's stolen credential is useless without that site's private key, and a valid
certificate of site A cannot be used with site B's credential.

The server puts the certificate in the ASGI scope the way the ASGI TLS extension does,
under ``scope["extensions"]["tls"]``, with the key ``client_cert_dict`` holding the
parsed form of :meth:`ssl.SSLSocket.getpeercert` (see :func:`with_peer_certificate`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["certificate_names", "identity_refusal", "with_peer_certificate"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TLS_EXTENSION = "tls"
PEER_CERT_KEY = "client_cert_dict"


def with_peer_certificate(app: ASGIApp, certificate: Mapping[str, Any]) -> ASGIApp:
    """``app`` for one connection, with that connection's verified client certificate in every scope."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions[TLS_EXTENSION] = {**(extensions.get(TLS_EXTENSION) or {}), PEER_CERT_KEY: dict(certificate)}
        await app({**scope, "extensions": extensions}, receive, send)

    return call


def certificate_names(scope: Mapping[str, Any]) -> frozenset[str] | None:
    """The subject CN and DNS subjectAltNames of the client certificate; None when there is none."""
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION) or {}
    certificate = tls.get(PEER_CERT_KEY)
    if not certificate:
        return None
    names = {value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"}
    names.update(value for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS")
    return frozenset(names)


def identity_refusal(scope: Mapping[str, Any], name: str) -> tuple[str, str] | None:
    """``(code, detail)`` when the connection's certificate does not vouch for agent ``name``, else None."""
    names = certificate_names(scope)
    if names is None:
        return (
            "certificate_required",
            "this aggregator requires mutual TLS: connect with the client certificate made for this site"
            " (fedloom agent --tls-cert/--tls-key)",
        )
    if name not in names:
        return (
            "certificate_mismatch",
            f"the TLS client certificate is for {', '.join(sorted(names)) or 'no name'}, not for agent {name!r}:"
            f" use the certificate made for {name!r} (its subject CN or a DNS subjectAltName must be the agent"
            " name) or the credential and name of the site the certificate belongs to",
        )
    return None
