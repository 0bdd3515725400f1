"""The tracking feed of a simulated run, built from ``Recording(tracking=...)``.

The feed reads each round back from the store, so it needs one, and it must watch after
the run log (which writes the round's metrics) — :func:`simulate` puts it right behind.
"""

from __future__ import annotations

from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.core.observe import RoundObserver
from fedloom.tracking.settings import TrackingSettings


def tracking_feed(store: Any, settings: TrackingSettings | None) -> list[RoundObserver]:
    """``[TrackingFeed]`` when sinks are asked for, else ``[]``; no store is a ``ConfigError``."""
    if settings is None or not settings.sinks:
        return []
    if not store:
        raise ConfigError("tracking reads each round from the store: drop --no-store (or Recording(store=None))")
    from fedloom.store.sql import resolve_home
    from fedloom.tracking.feed import TrackingFeed
    from fedloom.tracking.settings import build_sinks

    home = getattr(store, "home", None) or resolve_home()
    return [TrackingFeed(store, build_sinks(settings, home))]
