"""fedloom.dashboard — a live, read-only, offline web dashboard over a store of runs.

:func:`build_router` gives the FastAPI router (page, assets and JSON API) that
``fedloom server`` mounts in the aggregator and ``fedloom ui`` serves on its own; every
API call needs an admin credential (:mod:`fedloom.dashboard.auth`). See docs/dashboard.md.
"""

from fedloom.dashboard.api import build_router
from fedloom.dashboard.auth import Access, Verifier, join_token_verifier, new_one_time_secret, secret_verifier

__all__ = ["Access", "Verifier", "build_router", "join_token_verifier", "new_one_time_secret", "secret_verifier"]
