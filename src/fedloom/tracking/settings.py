"""Which sinks a run feeds and where they write: ``--track`` and the ``[tracking]`` table.

Every path defaults to a folder under the fedloom home, so a run and what watches it
live together and nothing is written to the working directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.tracking.sink import SINK_NAMES, TrackingSink

#: the keys of ``[tracking]`` in aggregator.toml and of ``Recording(tracking=...)``
TRACKING_KEYS = ("sinks", "tensorboard_dir", "mlflow_tracking_uri", "mlflow_experiment", "wandb_project", "wandb_mode")


@dataclass(frozen=True)
class TrackingSettings:
    """The sinks to feed and their places; empty strings mean "under the fedloom home"."""

    sinks: tuple[str, ...] = ()
    tensorboard_dir: str = ""
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "fedloom"
    wandb_project: str = "fedloom"
    wandb_mode: str = "offline"

    def __post_init__(self) -> None:
        unknown = [s for s in self.sinks if s not in SINK_NAMES]
        if unknown:
            raise ConfigError(f"tracking sinks must be among {', '.join(SINK_NAMES)}; got {', '.join(unknown)}")
        if len(set(self.sinks)) != len(self.sinks):
            raise ConfigError(f"tracking sinks name one twice: {', '.join(self.sinks)}")


def parse_track_flag(text: str) -> tuple[str, ...]:
    """``--track tensorboard,mlflow`` -> ``("tensorboard", "mlflow")`` (checked by the settings)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def settings_from_mapping(table: Mapping[str, Any], where: str = "[tracking]") -> TrackingSettings:
    """The ``[tracking]`` table, refusing unknown keys and values of the wrong type by name."""
    unknown = sorted(set(table) - set(TRACKING_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(TRACKING_KEYS)})")
    sinks = table.get("sinks", [])
    if not isinstance(sinks, list) or not all(isinstance(s, str) for s in sinks):
        raise ConfigError(f'{where} sinks must be a list of names, e.g. sinks = ["tensorboard", "mlflow"]')
    for key in TRACKING_KEYS[1:]:
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{where} {key} must be a string, got {table[key]!r}")
    texts = {k: str(v) for k, v in table.items() if k != "sinks"}
    return TrackingSettings(sinks=tuple(sinks), **texts)


def build_sinks(settings: TrackingSettings, home: Path | str) -> list[TrackingSink]:
    """One sink per name; a missing tool is a ``ConfigError`` naming its extra, before any round runs."""
    from fedloom.tracking.mlflow_sink import MlflowSink, default_tracking_uri
    from fedloom.tracking.tensorboard_sink import TensorBoardSink
    from fedloom.tracking.wandb_sink import WandbSink

    root = Path(home)
    sinks: list[TrackingSink] = []
    for name in settings.sinks:
        if name == "tensorboard":
            sinks.append(TensorBoardSink(settings.tensorboard_dir or root / "tensorboard"))
        elif name == "mlflow":
            uri = settings.mlflow_tracking_uri or default_tracking_uri(root)
            local = "" if settings.mlflow_tracking_uri else root / "mlflow" / "artifacts"
            sinks.append(MlflowSink(uri, settings.mlflow_experiment, local or None))
        else:
            sinks.append(WandbSink(root, settings.wandb_project, settings.wandb_mode))
    return sinks
