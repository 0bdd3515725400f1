"""The agent's TLS: whom it trusts (``--ca-file``) and who it is (``--tls-cert``/``--tls-key``).

Every problem with these files is a :class:`~fedloom.core.errors.ConfigError` naming the
file and the flag, raised when the agent starts, never a raw ``ssl.SSLError`` traceback
or a retry loop later.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from fedloom.core.errors import ConfigError

__all__ = ["make_ssl_context"]


def make_ssl_context(
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> ssl.SSLContext:
    """A verifying TLS context: trusts ``ca_file`` (PEM; None: the system's CAs) and, for mutual
    TLS, presents the client certificate ``cert_file`` with its private key ``key_file``.

    Hostname checking and certificate verification stay on.
    """
    if (cert_file is None) != (key_file is None):
        raise ConfigError("--tls-cert and --tls-key go together: give the site's certificate and its private key")
    if ca_file is None:
        context = ssl.create_default_context()
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
