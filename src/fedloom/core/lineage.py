"""The lineage chain of a run's global models: pure hashing, shared by the store that writes
each link and by ``fedloom models verify`` that recomputes them.

A link commits to the round's global model, the local models it aggregated, the run's
strategy config and the previous link, so changing any stored row or blob afterwards
without recomputing every later link is detected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def canonical_sha256(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, no spaces, ASCII, no NaN), so the
    same content hashes the same on every machine and Python version."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def config_sha256(config: Any) -> str:
    """The hash of a run's stored config (``runs.config``), as recorded in each link."""
    return canonical_sha256(config)


def lineage_link(
    run_id: str,
    round: int,
    model_sha256: str,
    num_samples: int,
    previous: str | None,
    inputs: Iterable[tuple[str, str, int]],
    config_hash: str,
) -> str:
    """The link of one global model: ``inputs`` are ``(client_id, local sha256, num_samples)``
    of the round's local models (order does not matter); ``previous`` is the link of the
    previous global model, None for the first."""
    document = {
        "run": run_id,
        "round": int(round),
        "model": model_sha256,
        "num_samples": int(num_samples),
        "previous": previous or "",
        "inputs": sorted([str(c), str(s), int(n)] for c, s, n in inputs),
        "config": config_hash,
    }
    return canonical_sha256(document)
