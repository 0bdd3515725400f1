"""The dashboard's page and assets, served from the installed package: no CDN, no network, no credential.

The files hold no run data (every number comes from the authenticated API), so they are
public; only the names in :data:`ASSETS` are served, read once from the package, so a
request path can never reach another file.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from fedloom.server.answers import STATUS_OF, RequestRefusedError

#: every file the page needs, with its media type
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "pages.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}
#: the page is only ever loaded from itself: no scripts, styles, fonts or images from elsewhere
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def asset_bytes(name: str) -> bytes:
    """The packaged file ``static/NAME`` (read once)."""
    return resources.files("fedloom.dashboard").joinpath("static", name).read_bytes()


def _asset(name: str) -> Response:
    if name not in ASSETS:
        raise RequestRefusedError(STATUS_OF["not_found"], "not_found", f"no dashboard file {name!r}")
    return Response(asset_bytes(name), media_type=ASSETS[name], headers=_SECURITY_HEADERS)


def asset_router() -> APIRouter:
    """``/dashboard/`` (the page) and ``/dashboard/static/NAME`` (its scripts and styles)."""
    router = APIRouter(prefix="/dashboard", include_in_schema=False)

    @router.get("")
    def bare() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    @router.get("/")
    def page() -> Response:
        return _asset("index.html")

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        return _asset(name)

    return router
