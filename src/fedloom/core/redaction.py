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
