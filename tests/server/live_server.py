"""A real uvicorn server on 127.0.0.1 in a thread, for tests that need real sockets (slow bodies)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


@contextmanager
def serving(app: FastAPI, timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL and stops the server afterwards.
    ``app.state.test_server`` is the uvicorn server, for a test that stops it early as the CLI does."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    app.state.test_server = server
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    end = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
