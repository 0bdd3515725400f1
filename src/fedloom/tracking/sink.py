"""The one protocol every tracking sink implements, and how a missing tool is reported.

A sink knows one tool (TensorBoard, MLflow, W&B) and nothing of rounds or stores: it is
handed a run's parameters, then each round's numbers, then the final model's bytes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Protocol

from fedloom.core.errors import ConfigError
from fedloom.server.config_sections import TRACKING_SINKS

#: the ``--track`` names and the ``[tracking] sinks`` values
SINK_NAMES = TRACKING_SINKS
#: the file name of the final global model artifact every sink stores
MODEL_ARTIFACT = "global_model.safetensors"


class TrackingSink(Protocol):
    """Where a run's numbers go; every call may raise (the feed logs it and goes on)."""

    name: str

    def start(self, run_id: str, run_name: str, params: Mapping[str, str]) -> None: ...

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def finish(self, status: str, model: bytes | None) -> None: ...


def require(module: str, extra: str) -> ModuleType:
    """Import an optional tool, or refuse with the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"tracking with {extra} needs the {module!r} package, which is not installed: "
            f"run `pip install 'fedloom[{extra}]'`"
        ) from exc
