"""Loading the accountant library must not leave a handler that closes someone else's stderr.

absl.logging (imported by dp-accounting) keeps the ``sys.stderr`` of its import; a server start
(uvicorn's ``logging.config.dictConfig``) closes every handler, and closing absl's closed that
stream: under pytest, its capture file, which failed every later test of the session."""

from __future__ import annotations

import io
import sys

import pytest

from fedloom.algorithms.privacy_accountant import _library

pytest.importorskip("dp_accounting")


def test_absl_handler_no_longer_holds_a_redirected_stderr() -> None:
    import absl.logging

    redirected = io.StringIO()
    handler = absl.logging.get_absl_handler()
    kept = handler.python_handler.stream
    handler.python_handler.stream = redirected  # as if absl had been imported under this stderr
    try:
        _library()
        handler.python_handler.close()  # what dictConfig does to every handler
        assert not redirected.closed
        assert handler.python_handler.stream is sys.__stderr__
    finally:
        handler.python_handler.stream = kept
