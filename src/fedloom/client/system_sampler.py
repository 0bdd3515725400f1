"""Measuring this process's resource use: CPU, resident memory and, when present, the GPU.

Shared by the agent, the aggregator (passed in by ``fedloom server``) and the
simulation, so every party's ``system`` rows mean the same thing. psutil is a core
dependency; torch is optional and only read when the process has already imported
it (a trainer that uses torch did; importing it here would cost seconds and memory).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs are installed


class SystemSampler:
    """``sample()`` answers ``cpu_percent`` (since the previous sample, 100 per busy core),
    ``memory_rss_bytes`` and, with a CUDA device, ``gpu_util_percent`` and ``gpu_memory_bytes``."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(interval=None)  # the first call only starts the count

    def sample(self) -> dict[str, float]:
        """This process's use since the previous call (CPU) and now (memory, GPU)."""
        values = {
            "cpu_percent": max(0.0, float(self._process.cpu_percent(interval=None))),
            "memory_rss_bytes": float(self._process.memory_info().rss),
        }
        values.update(gpu_sample())
        return values


def gpu_sample() -> dict[str, float]:
    """GPU utilisation and memory of the current CUDA device, or {} without torch or a GPU."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return {}
    try:
        if not torch.cuda.is_available():
            return {}
        values = {"gpu_memory_bytes": float(torch.cuda.memory_allocated())}
        with contextlib.suppress(Exception):  # utilization() needs pynvml; the memory figure still stands
            values["gpu_util_percent"] = float(min(100, max(0, torch.cuda.utilization())))
        return values
    except Exception:  # a broken CUDA setup must not stop a round
        return {}
