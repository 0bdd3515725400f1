"""How the aggregator's HTTP API answers an error: always ``{"error": CODE, "detail": TEXT}``.

A refusal of the aggregator keeps its code and status; a store failure becomes 503
``store_unavailable`` with its real reason in the log only; FastAPI's request
validation and Starlette's HTTP errors get protocol codes too. Every refusal below 500
spends a token of the caller's rate limit, so a client that keeps sending bad requests
is slowed down (429 with ``Retry-After``).
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedloom.core.errors import StoreError
from fedloom.core.redaction import redact_url
from fedloom.server.aggregator import RequestRefusedError
from fedloom.server.limits import RateLimiter, rate_key

__all__ = ["STORE_UNAVAILABLE_DETAIL", "error_response", "install_error_handlers"]

log = logging.getLogger("fedloom.aggregator")

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
#: what an agent is told when the store fails (the reason is logged on the aggregator)
STORE_UNAVAILABLE_DETAIL = "the aggregator's database is unavailable; try again later (details are in its log)"


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The protocol's error body; a 401 also names the scheme (``WWW-Authenticate: Bearer``)."""
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": CODE, "detail": TEXT}``."""

    async def on_refusal(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestRefusedError)
        key = rate_key(request)
        limiter: RateLimiter = request.app.state.rate_limiter
        if exc.code == "rate_limited":
            wait = max(1, math.ceil(limiter.retry_after(key)))
            return error_response(exc.status, exc.code, exc.detail, {"Retry-After": str(wait)})
        if exc.status < 500:
            limiter.spend(key)
        return error_response(exc.status, exc.code, exc.detail)

    async def on_store_error(request: Request, exc: Exception) -> JSONResponse:
        # the real reason names database hosts, ports and blob paths: it goes to the log only
        log.error("store error while answering %s %s: %s", request.method, request.url.path, redact_url(exc))
        return error_response(503, "store_unavailable", STORE_UNAVAILABLE_DETAIL)

    async def on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        request.app.state.rate_limiter.spend(rate_key(request))
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        request.app.state.rate_limiter.spend(rate_key(request))
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail))

    app.add_exception_handler(RequestRefusedError, on_refusal)
    app.add_exception_handler(StoreError, on_store_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
