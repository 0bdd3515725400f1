"""Passwords in database URLs never reach the record, an error message or a log."""

from __future__ import annotations

import pytest

from fedloom.core.redaction import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://fedloom:s3cr%40t@db.internal:5432/fl",
            "postgresql+psycopg://fedloom:***@db.internal:5432/fl",
        ),
        ("postgresql://u:p@ss:w/rd@h/db", "postgresql://u:***@h/db"),
        ("postgresql://db.internal:5432/fl", "postgresql://db.internal:5432/fl"),
        (
            "postgresql://fedloom@db/fl?password=hunter2&sslmode=require",
            "postgresql://fedloom@db/fl?password=***&sslmode=require",
        ),
        ("sqlite:////var/lib/fedloom/fedloom.db", "sqlite:////var/lib/fedloom/fedloom.db"),
        ("not a url: x://u:pw@", "not a url: x://u:***@"),
        ("", ""),
    ],
)
def test_redact_url_hides_passwords_only(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_secrets_masks_tokens_credentials_headers_and_passwords() -> None:
    from fedloom.core.redaction import redact_secrets

    assert redact_secrets("Authorization: Bearer fla_abcdefghijkl") == "Authorization: Bearer ***"
    assert redact_secrets("joined with flj_ABCdef123456 ok") == "joined with flj_*** ok"
    assert redact_secrets("password=hunter2&x=1 token: abc") == "password=***&x=1 token: ***"
    assert redact_secrets("db postgresql://u:pw@h/db") == "db postgresql://u:***@h/db"
    assert redact_secrets("my own s3cr3t-value here", ("s3cr3t-value",)) == "my own *** here"
    assert redact_secrets("the token expired at round 3") == "the token expired at round 3"
