"""What one simulated client may use on a Ray node: CPUs, GPUs and memory, checked up front.

The Ray executor (:mod:`fedloom.sim.ray_executor`) gives every concurrently training
client its own Ray actor reserving exactly these resources, so a node runs at most as
many clients at once as its resources hold (``--ray-cpus-per-client 1`` on a node of
4 CPUs: 4 clients). This module needs no Ray: the CLI and :class:`SimConfig` check the
flags with it before anything starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedloom.core.errors import ConfigError

#: Ray's finest fraction of a resource
_PRECISION = 1e-4
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(text: str | int) -> int:
    """Bytes from ``2000000000``, ``"2GB"`` (powers of 1000) or ``"512MiB"`` (powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ConfigError(
                f"ray_memory_per_client {text!r} is not a size: write bytes or a number with a unit,"
                " e.g. --ray-memory-per-client 2GB or 512MiB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size < 1:
        raise ConfigError(f"ray_memory_per_client must be at least 1 byte, got {text!r} (e.g. 2GB)")
    return size


def _check_quantity(flag: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{flag} must be a finite number >= 0, got {value}")
    if value and abs(round(value / _PRECISION) * _PRECISION - value) > 1e-9:
        raise ConfigError(f"{flag} = {value}: Ray divides resources in steps of {_PRECISION:g}; round it")


@dataclass(frozen=True)
class ClientResources:
    """The Ray resources reserved for each client while it trains (``memory`` in bytes)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None

    def __post_init__(self) -> None:
        _check_quantity("--ray-cpus-per-client", self.cpus)
        _check_quantity("--ray-gpus-per-client", self.gpus)
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ConfigError(f"--ray-gpus-per-client above 1 must be a whole number of GPUs, got {self.gpus}")
        if self.memory is not None and self.memory < 1:
            raise ConfigError(f"--ray-memory-per-client must be at least 1 byte, got {self.memory}")
        if not self.cpus and not self.gpus:
            raise ConfigError(
                "each client needs some CPU or GPU (--ray-cpus-per-client or --ray-gpus-per-client > 0):"
                " with neither, a node would start every client at once"
            )

    @classmethod
    def from_flags(cls, cpus: float, gpus: float, memory: str | int | None) -> ClientResources:
        """The resources ``--ray-cpus/gpus/memory-per-client`` ask for (memory as bytes or ``"2GB"``)."""
        return cls(float(cpus), float(gpus), parse_memory(memory) if memory not in (None, "") else None)

    def actor_options(self) -> dict[str, Any]:
        """Ray's options reserving these resources for one client's actor."""
        options: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory is not None:
            options["memory"] = self.memory
        return options

    def clients_on(self, node: Mapping[str, float]) -> int:
        """How many clients a node with these total resources can train at once."""
        limits = [("CPU", self.cpus), ("GPU", self.gpus), ("memory", float(self.memory or 0))]
        return min(int(node.get(name, 0.0) / need + 1e-9) for name, need in limits if need > 0)

    def describe(self) -> str:
        """E.g. ``1 CPU, 0.5 GPU, 2000000000 bytes of memory`` (for error messages and logs)."""
        parts = [f"{self.cpus:g} CPU"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU")
        if self.memory is not None:
            parts.append(f"{self.memory} bytes of memory")
        return ", ".join(parts)
