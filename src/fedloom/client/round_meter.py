"""What one agent round cost: the timings and bytes an agent reports with its upload.

An update is built (and saved, so a restart can resend it) before it is sent, so the
time its own upload takes cannot travel with it. The agent therefore reports
``seconds_upload`` of its **previous** accepted upload (absent on its first one):
stored under round ``r`` it means "the upload that ended this agent's previous round
took that long". Everything else describes round ``r`` itself:

- ``seconds_wait``: from the end of the previous upload (or the agent's start) until
  this round's task was seen;
- ``seconds_download`` / ``bytes_down``: the global model fetch (0 when it was held);
- ``seconds_train``; ``bytes_up``: the model bytes of this upload;
- ``cpu_percent`` (since the previous report), ``memory_rss_bytes``, GPU when present.

Byte counts are the tensors' bytes; the safetensors header adds at most a few KiB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from fedloom.client.system_sampler import SystemSampler
from fedloom.core.errors import ConfigError
from fedloom.core.serialization import to_bytes
from fedloom.core.system_metrics import system_metrics_json
from fedloom.core.weights import Weights


def tensor_bytes(weights: Weights) -> int:
    """Bytes of ``weights``' tensors, as they travel in a payload."""
    return sum(int(array.nbytes) for array in weights.values())


class AgentRoundMeter:
    """Collects one round's figures as the agent goes; ``report`` hands them over and starts afresh.

    ``enabled=False`` (``fedloom agent --no-system-metrics``) keeps uploads as they were."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._sampler = SystemSampler() if enabled else None
        self._wait_started = time.monotonic()
        self._figures: dict[str, float] = {}
        self._last_upload_seconds: float | None = None

    def selected(self) -> None:
        """The round's task was seen: the wait is over."""
        self._figures = {"seconds_wait": max(0.0, time.monotonic() - self._wait_started)}
        self._figures.update(seconds_download=0.0, bytes_down=0.0)

    def downloaded(self, seconds: float, weights: Weights) -> None:
        self._figures.update(seconds_download=max(0.0, seconds), bytes_down=float(tensor_bytes(weights)))

    def trained(self, seconds: float) -> None:
        self._figures["seconds_train"] = max(0.0, seconds)

    def uploaded(self, seconds: float) -> None:
        """An upload went through in ``seconds``: reported with the next one; the next wait starts."""
        self._last_upload_seconds = max(0.0, seconds)
        self._wait_started = time.monotonic()

    def report(self, weights: Weights) -> dict[str, float]:
        """The figures for the update of ``weights`` ({} when disabled)."""
        if self._sampler is None:
            return {}
        figures = {**self._figures, "bytes_up": float(tensor_bytes(weights)), **self._sampler.sample()}
        if self._last_upload_seconds is not None:
            figures["seconds_upload"] = self._last_upload_seconds
        self._figures = {}
        return figures


def update_payload_with_system(
    agent_id: str | None,
    round: int,
    weights: Weights,
    num_samples: int,
    metrics: Mapping[str, float],
    system: Mapping[str, float],
) -> bytes:
    """An update upload's bytes with the optional ``system`` header field (docs/protocol.md)."""
    extra = upload_header_fields(metrics, system)
    return to_bytes(weights, round=round, client_id=known_agent_id(agent_id), num_samples=num_samples, extra=extra)


def upload_header_fields(metrics: Mapping[str, float], system: Mapping[str, float]) -> dict[str, str]:
    """An update header's ``metrics`` field and, when measured, its ``system`` field."""
    extra = {"metrics": json.dumps(dict(metrics), allow_nan=False)}
    if system:
        extra["system"] = system_metrics_json(system)
    return extra


def known_agent_id(agent_id: str | None) -> str:
    """``agent_id``, which an upload must name: an agent that never registered has none."""
    if agent_id is None:
        raise ConfigError("the client has no agent id: call register() or authenticate() first")
    return agent_id
