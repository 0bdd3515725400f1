"""Edge-aggregator tests reuse the aggregator helpers (tests/server) and the light devices (tests/light)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS / "server", TESTS / "light", TESTS / "edge"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
