"""Weights & Biases: offline by default, so nothing leaves the machine unless asked.

``mode="online"`` is honoured only when ``WANDB_API_KEY`` is set: otherwise the run would
stop to ask for a login, which a federation must never do. Offline runs are uploaded later
with ``wandb sync <dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.server.config_sections import WANDB_MODES
from fedloom.tracking.sink import MODEL_ARTIFACT, require

_EXIT_CODES = {"finished": 0, "interrupted": 255}


class WandbSink:
    """One W&B run per fedloom run, written under ``<directory>/wandb/``."""

    name = "wandb"

    def __init__(self, directory: Path | str, project: str = "fedloom", mode: str = "offline") -> None:
        if mode not in WANDB_MODES:
            raise ConfigError(f"wandb_mode must be one of {WANDB_MODES}, got {mode!r}")
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            raise ConfigError("wandb_mode = 'online' needs WANDB_API_KEY in the environment (or use 'offline')")
        self._wandb = require("wandb", "wandb")
        self.directory = Path(directory)
        self.project = project
        self.mode = mode
        self.run: Any = None

    def start(self, run_id: str, run_name: str, params: Mapping[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = self._wandb.Settings(silent=True, console="off", x_disable_stats=True)
        self.run = self._wandb.init(
            project=self.project,
            name=run_name,
            dir=str(self.directory),
            mode=self.mode,
            config=dict(params),
            tags=[f"fedloom-{run_id[:8]}"],
            reinit="create_new",
            settings=settings,
        )

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def finish(self, status: str, model: bytes | None) -> None:
        if self.run is None:
            return
        if model is not None:
            with tempfile.TemporaryDirectory(prefix="fedloom-wandb-") as folder:
                path = Path(folder) / MODEL_ARTIFACT
                path.write_bytes(model)
                artifact = self._wandb.Artifact("global_model", type="model")
                artifact.add_file(str(path))
                self.run.log_artifact(artifact)  # the default policy copies the file before it is removed
        self.run.finish(exit_code=_EXIT_CODES.get(status, 1))
        self.run = None
