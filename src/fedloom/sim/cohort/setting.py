"""The cohort setting (``fedloom sim --cohort auto|off|N``, ``SequentialExecutor(cohort=...)``), checked.

Kept free of torch so that reading a config never imports it.
"""

from __future__ import annotations

from fedloom.core.errors import ConfigError

#: the words the setting accepts besides a positive cohort size
COHORT_WORDS = ("auto", "off")


def parse_cohort(value: object) -> str | int:
    """``"auto"``, ``"off"`` or a positive cohort size; anything else is refused naming the field."""
    if isinstance(value, str) and value in COHORT_WORDS:
        return value
    text = str(value).strip()
    if not isinstance(value, bool) and text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(
        f"cohort must be 'auto', 'off' or a positive number of clients, got {value!r} (e.g. --cohort auto)"
    )
