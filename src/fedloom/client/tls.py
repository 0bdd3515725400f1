"""The agent's TLS: whom it trusts (``--ca-file``) and who it is (``--tls-cert``/``--tls-key``).

Every problem with these files is a :class:`~fedloom.core.errors.ConfigError` naming the
file and the flag, raised when the agent starts, never a raw ``ssl.SSLError`` traceback.

A TLS failure while talking to the aggregator is a configuration problem too, and
asking again will not fix it: :func:`tls_problem` tells such failures (unknown CA,
a host name the certificate lacks, an expired certificate, a client certificate the
server refused) from network errors, so the transport raises :class:`TlsHandshakeError`
with the cause and the fix instead of retrying forever.

A refused client certificate is the subtle case. A server that sends the TLS alert
says so; an asyncio server (uvicorn) just closes the connection, which on TLS 1.3 looks
like "server disconnected". So after such a disconnect :func:`tls_problem` probes: two
fresh connections, each sending one request. If both are closed straight after the
handshake with no answer, the server is refusing this agent's certificate; if one gets
an answer, it was a passing network problem and the request is retried as usual.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from fedloom.core.errors import ConfigError

__all__ = ["TlsHandshakeError", "make_ssl_context", "tls_problem"]

#: verify codes (OpenSSL X509_V_ERR_*) meaning "signed by nobody the agent trusts"
_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 27})
_HOST_MISMATCH = frozenset({62, 64})
_EXPIRED, _NOT_YET_VALID = 10, 9
#: TLS alerts a server sends when it does not accept the client's certificate
_REFUSAL_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
_PROBES = 2


class TlsHandshakeError(ConfigError):
    """TLS with the aggregator failed in a way retrying cannot fix; the message names the cause and the fix."""


def make_ssl_context(
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> ssl.SSLContext:
    """A verifying TLS context: trusts ``ca_file`` (PEM; None: the public CAs) and, for mutual
    TLS, presents the client certificate ``cert_file`` with its private key ``key_file``.

    Hostname checking and certificate verification stay on.
    """
    if (cert_file is None) != (key_file is None):
        raise ConfigError("--tls-cert and --tls-key go together: give the site's certificate and its private key")
    if ca_file is None:  # the public CAs httpx trusts by default (certifi's bundle)
        import certifi

        context = ssl.create_default_context(cafile=certifi.where())
    else:
        path = Path(ca_file)
        if not path.is_file():
            raise ConfigError(
                f"CA file {str(path)!r} does not exist (pass --ca-file the aggregator's CA certificate, PEM)"
            )
        try:
            context = ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"CA file {str(path)!r} holds no usable PEM certificate: {exc}") from None
    if cert_file is not None and key_file is not None:
        _load_identity(context, Path(cert_file), Path(key_file))
    return context


def _load_identity(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load the site's certificate and key, with an error naming the files when they do not fit."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise ConfigError(f"{flag} {str(path)!r} does not exist (give the site's PEM certificate and key)")
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"--tls-cert {str(cert)!r} and --tls-key {str(key)!r} cannot be used together ({exc.reason or exc}):"
            " the key must be the private key of that certificate, both in PEM, the key unencrypted"
        ) from None
    except OSError as exc:
        raise ConfigError(f"--tls-cert {str(cert)!r} / --tls-key {str(key)!r} cannot be read: {exc}") from None


# --------------------------------------------------------------------- telling TLS failures apart


def tls_problem(exc: httpx.TransportError, url: str, context: ssl.SSLContext, has_cert: bool) -> str | None:
    """The cause and fix when ``exc`` (a failed request to ``url``) is a TLS misconfiguration; else None."""
    cause = _ssl_cause(exc)
    host = urlsplit(url).hostname or url
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _server_certificate_problem(cause, host)
    if cause is not None and cause.reason in _REFUSAL_ALERTS:
        return _client_certificate_refused(has_cert, str(cause.reason))
    if cause is not None and cause.reason == "WRONG_VERSION_NUMBER":
        return f"{url} does not speak TLS on that port (an http:// server?): check the scheme and port of --server"
    closed = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.ConnectError)
    if closed and all(_closes_after_handshake(url, context) for _ in range(_PROBES)):
        return _client_certificate_refused(has_cert, "the server closed every new connection after the handshake")
    return None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an httpx error (httpx and httpcore chain the originals)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None or isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _server_certificate_problem(error: ssl.SSLCertVerificationError, host: str) -> str:
    code, message = error.verify_code, error.verify_message
    if code in _HOST_MISMATCH:
        return (
            f"{host!r} is not a name in the aggregator's certificate ({message}): put a host name or IP the"
            f" certificate's subjectAltName carries in --server, or reissue the certificate with {host}"
        )
    if code in _UNTRUSTED:
        return (
            f"the aggregator's certificate is not signed by a CA the agent trusts ({message}): pass --ca-file"
            " with the CA certificate (PEM) that signed it"
        )
    if code == _EXPIRED:
        return f"the aggregator's certificate has expired ({message}): the aggregator needs a renewed certificate"
    if code == _NOT_YET_VALID:
        return f"the aggregator's certificate is not valid yet ({message}): check this machine's clock"
    return f"the aggregator's certificate failed verification ({message}): check --ca-file and the certificate"


def _client_certificate_refused(has_cert: bool, evidence: str) -> str:
    sent = "the certificate given" if has_cert else "none was given"
    return (
        f"the aggregator refused this agent's client certificate ({sent}; {evidence}): it requires mutual TLS."
        " Pass --tls-cert and --tls-key with this site's certificate, signed by the federation's CA (the"
        " aggregator's [tls] client_ca_file) and made for this agent's --name"
    )


def _closes_after_handshake(url: str, context: ssl.SSLContext, timeout: float = 10.0) -> bool:
    """True when a fresh connection to ``url`` gets through the handshake (or nearly) and is then
    closed without an answer to a plain request: what a server refusing our certificate does."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    request = f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        with (
            socket.create_connection((host, parts.port or 443), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(request)
            return tls.recv(1) == b""
    except ssl.SSLEOFError:  # TLS 1.2: the server hung up inside the handshake
        return True
    except ssl.SSLError as exc:
        return exc.reason in _REFUSAL_ALERTS
    except OSError:  # refused, reset, timed out: a network problem, retried as usual
        return False
