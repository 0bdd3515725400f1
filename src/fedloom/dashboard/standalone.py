"""The dashboard as an app of its own (``fedloom ui``), without an aggregator around it.

It answers errors exactly as the aggregator does (``{"error": CODE, "detail": TEXT}``) and
slows down an address that keeps presenting wrong credentials (429), like the aggregator.
"""

from __future__ import annotations

from fastapi import FastAPI

from fedloom.dashboard.api import build_router
from fedloom.dashboard.auth import Verifier
from fedloom.server.http_errors import install_error_handlers
from fedloom.server.limits import RateLimiter
from fedloom.store import SqlStore

#: refused sign-ins an address may make at once, then per second
REFUSALS_BURST = 20
REFUSALS_PER_SECOND = 2.0


def standalone_app(store: SqlStore, verifier: Verifier) -> FastAPI:
    """A FastAPI app serving only the dashboard over ``store``."""
    app = FastAPI(title="fedloom dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.rate_limiter = RateLimiter(REFUSALS_PER_SECOND, REFUSALS_BURST)
    install_error_handlers(app)
    app.include_router(build_router(store, verifier))
    return app
