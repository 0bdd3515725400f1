"""The lineage chain of a run's global models: pure hashing, shared by the store that writes
each link and by ``fedloom models verify`` that recomputes them.

A link commits to the round's global model, the local models it aggregated, the run's
strategy config and the previous link, so changing any stored row or blob afterwards
without recomputing every later link is detected.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fedloom.core.errors import ValidationError


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


_SHA256 = re.compile(r"[0-9a-f]{64}")
#: local models one entry may list; the aggregator never selects more clients in a round than this
MAX_LINEAGE_INPUTS = 100_000


def _sha(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValidationError(f"lineage field {field!r} must be a 64-character lowercase hex SHA-256")
    return value


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValidationError(f"lineage field {field!r} must be an integer in [0, 2^63)")
    return value


def _input(item: Any, index: int) -> tuple[str, str, int]:
    where = f"inputs[{index}]"
    if not isinstance(item, list | tuple) or len(item) != 3:
        raise ValidationError(f"lineage field {where!r} must be [client_id, sha256, num_samples]")
    client, sha, samples = item
    if not isinstance(client, str) or not 0 < len(client) <= 256:
        raise ValidationError(f"lineage field {where + '[0]'!r} must be a client id of 1-256 characters")
    return client, _sha(sha, where + "[1]"), _count(samples, where + "[2]")


@dataclass(frozen=True)
class LineageEntry:
    """One global model's link with everything needed to recompute it, as the aggregator serves it
    to agents: an agent checks the link, that it extends the link it saw before, and that its own
    accepted local model is among the inputs, without trusting the aggregator's arithmetic."""

    run_id: str
    round: int
    model_sha256: str
    num_samples: int
    previous: str | None
    inputs: tuple[tuple[str, str, int], ...]
    config_sha256: str
    link: str

    def recomputed_link(self) -> str:
        """The link these fields give; it equals :attr:`link` unless the entry was altered."""
        return lineage_link(
            self.run_id, self.round, self.model_sha256, self.num_samples, self.previous, self.inputs, self.config_sha256
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "round": self.round,
            "model_sha256": self.model_sha256,
            "num_samples": self.num_samples,
            "previous": self.previous,
            "inputs": [list(item) for item in self.inputs],
            "config_sha256": self.config_sha256,
            "link": self.link,
        }

    @classmethod
    def from_json(cls, data: Any) -> LineageEntry:
        """Parse an entry from untrusted JSON; every malformed field is named."""
        if not isinstance(data, dict):
            raise ValidationError("a lineage entry must be a JSON object")
        run_id = data.get("run_id")
        if not isinstance(run_id, str) or not 0 < len(run_id) <= 256:
            raise ValidationError("lineage field 'run_id' must be a string of 1-256 characters")
        inputs = data.get("inputs")
        if not isinstance(inputs, list) or len(inputs) > MAX_LINEAGE_INPUTS:
            raise ValidationError(f"lineage field 'inputs' must be a list of at most {MAX_LINEAGE_INPUTS} items")
        previous = data.get("previous")
        return cls(
            run_id=run_id,
            round=_count(data.get("round"), "round"),
            model_sha256=_sha(data.get("model_sha256"), "model_sha256"),
            num_samples=_count(data.get("num_samples"), "num_samples"),
            previous=None if previous is None else _sha(previous, "previous"),
            inputs=tuple(_input(item, i) for i, item in enumerate(inputs)),
            config_sha256=_sha(data.get("config_sha256"), "config_sha256"),
            link=_sha(data.get("link"), "link"),
        )
