"""Secrets out of what fedloom stores, prints and logs: database URLs carry passwords.

A URL such as ``postgresql+psycopg://fedloom:secret@db.internal/fedloom`` is copied into
the run's stored config, error messages and logs; :func:`redact_url` replaces its
password (in the ``user:password@`` part and in ``password=`` query parameters) with
``***``. It works on text, not on a parsed URL, because the URL that most needs it is
the malformed one an error message quotes.
"""

from __future__ import annotations

import re

#: what replaces a password
MASK = "***"
_USERINFO_PASSWORD = re.compile(r"(?P<head>://[^/@:?#\s]*:)\S*@")  # to the last @: an unescaped @ must not leak
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&#\s]*", re.IGNORECASE)


def redact_url(url: object) -> str:
    """``url`` as text with every password replaced by ``***`` (other parts unchanged)."""
    text = str(url)
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


#: fedloom's own secrets by their public prefixes (join tokens, agent credentials), and bearer headers
_FEDLOOM_SECRET = re.compile(r"\b(?P<head>fl[ja]_)[A-Za-z0-9_\-]{6,}")
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)[^\s'\",;]+", re.IGNORECASE)
_KEYED_SECRET = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token|join_token|credential|api[_-]?key)\b['\"]?\s*[=:]\s*['\"]?)"
    r"[^\s'\",;&]+",
    re.IGNORECASE,
)


def redact_secrets(text: str, known: tuple[str, ...] = ()) -> str:
    """``text`` with secrets masked: URL passwords (:func:`redact_url`), fedloom tokens and
    credentials (``flj_…``, ``fla_…``), ``Authorization`` values (``Bearer …``), ``password=…``,
    ``token: …`` style pairs, and every string of ``known`` (a party's own secrets)."""
    for secret in known:
        if secret:
            text = text.replace(secret, MASK)
    text = redact_url(text)
    text = _FEDLOOM_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    return _KEYED_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)
