"""Who may read the dashboard: an admin credential on every API call, checked by a pluggable verifier.

The dashboard shows every agent, every refusal and every model of a run, so it is for
the federation's operator only. ``fedloom server`` verifies an admin join token against
the tokens table (role ``admin``, not revoked); ``fedloom ui``, which has no tokens,
verifies the random one-time secret it printed at start. Either way the answer is one
of three: admin (200), a valid but non-admin credential (403), or nothing usable (401).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from fastapi import Request

from fedloom.server.answers import STATUS_OF, RequestRefusedError
from fedloom.server.limits import address_key, rate_limited_refusal

#: prefix of the one-time credential ``fedloom ui`` prints
UI_TOKEN_PREFIX = "flu_"  # noqa: S105 (a public prefix, not a secret)
#: longer bearer strings cannot be one of our secrets; refused unread
_MAX_SECRET_LENGTH = 256


class Access(Enum):
    """What a presented credential is worth to the dashboard."""

    ADMIN = "admin"
    NOT_ADMIN = "not_admin"
    UNKNOWN = "unknown"


#: maps a presented bearer secret to what it is worth
Verifier = Callable[[str], Access]


class _TokenReader(Protocol):
    def verify_join_token(self, token: str) -> object | None: ...


def join_token_verifier(store: _TokenReader) -> Verifier:
    """Admin join tokens of the store (``fedloom token create --name NAME --admin``); agent tokens are refused."""

    def verify(secret: str) -> Access:
        token = store.verify_join_token(secret)
        if token is None:
            return Access.UNKNOWN
        return Access.ADMIN if getattr(token, "role", None) == "admin" else Access.NOT_ADMIN

    return verify


def new_one_time_secret() -> str:
    """A fresh random credential for one ``fedloom ui`` process (256 bits)."""
    return UI_TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_verifier(expected: str) -> Verifier:
    """Exactly this secret is admin (compared in constant time); anything else is unknown."""

    def verify(secret: str) -> Access:
        same = hmac.compare_digest(secret.encode("utf-8", "replace"), expected.encode("utf-8"))
        return Access.ADMIN if same else Access.UNKNOWN

    return verify


def require_admin(request: Request, verifier: Verifier) -> None:
    """Refuse 401 without a usable bearer credential and 403 for a valid one that is not an admin's."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or len(secret) > _MAX_SECRET_LENGTH:
        raise _refused(
            "unauthorized", "send 'Authorization: Bearer <admin token>' (fedloom token create --name NAME --admin)"
        )
    limited = rate_limited_refusal(request, address_key(request))
    if limited is not None:  # an address that keeps guessing is slowed down before any lookup
        raise limited
    access = verifier(secret)
    if access is Access.UNKNOWN:
        raise _refused("unauthorized", "the credential is unknown or revoked: sign in again with an admin token")
    if access is Access.NOT_ADMIN:
        raise _refused(
            "forbidden", "the dashboard needs an admin token (fedloom token create --name NAME --admin), not an agent's"
        )


def _refused(code: str, detail: str) -> RequestRefusedError:
    return RequestRefusedError(STATUS_OF[code], code, detail)
