"""What a SimConfig trains on: a built-in dataset by name, or a local one by its description.

``dataset = "fmnist"`` and ``data = {kind = "table", path = ..., target = ...}`` exclude
each other; the description is checked by :class:`fedloom.data.DataSpec` when the config
is built, so a typo in a ``[sim.data]`` table fails before any file is opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.data import DataSpec

__all__ = ["DATASETS", "check_data_choice", "data_label", "data_shorthand", "data_spec_for"]

DATASETS = ("digits", "fmnist", "cifar10")


def check_data_choice(dataset: str | None, data: Mapping[str, Any], seed: int, partition_by: str | None) -> None:
    """``dataset`` or ``data``, not both; a known dataset, or a description that DataSpec accepts."""
    if not data:
        if data_label(dataset, data) not in DATASETS:
            raise ConfigError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
        return
    if dataset is not None:
        raise ConfigError(
            f"dataset ({dataset!r}) and data ({data_label(dataset, data)}) exclude each other: give --dataset NAME"
            " for a built-in dataset or --data KIND:PATH for a local one, not both"
        )
    if "by" in data:
        raise ConfigError("data.by: the group column is partition_by (--by COL), beside --partition natural")
    data_spec_for(data, seed, partition_by)


def data_label(dataset: str | None, data: Mapping[str, Any]) -> str:
    """What a run trains on, for names and messages: ``digits``, or ``table:hospital.csv``."""
    if data:
        return f"{data.get('kind')}:{data.get('path')}"
    return dataset or "digits"


def data_spec_for(data: Mapping[str, Any], seed: int, partition_by: str | None) -> DataSpec:
    """The description ``data`` with the run's ``seed`` (unless it sets one) and ``partition_by`` as its ``by``."""
    from fedloom.data import DataSpec

    extra: dict[str, Any] = {"seed": seed}
    if partition_by is not None:
        extra["by"] = partition_by
    return DataSpec.from_mapping({**extra, **data})


def data_shorthand(text: str) -> dict[str, Any]:
    """``"table:hospital.csv"`` -> ``{"kind": "table", "path": "hospital.csv"}`` (the kind checked)."""
    from fedloom.data.spec import split_kind_path

    kind, path = split_kind_path(text)
    return {"kind": kind, "path": path}
