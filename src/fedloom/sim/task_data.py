"""What a built-in simulation trains on: a dataset by name, or a local one from its description.

``fedloom sim --dataset digits`` loads a built-in dataset; ``fedloom sim --data
table:hospital.csv --target outcome`` loads a local one with
:func:`fedloom.data.spec.load_data`, the loader a deployed ``fedloom agent --data``
uses. A local dataset brings what the run must remember to be understood later (its
description, the columns the features came from, the class names and the preprocessing
fitted on the training rows) and, with ``--by``, the group of every training row, which
``--partition natural`` turns into one client per group.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.data import DatasetSplits, load_dataset
from fedloom.sim.config import SimConfig
from fedloom.sim.config_data import data_spec_for
from fedloom.sim.partition_natural import natural_names

__all__ = ["TaskData", "load_task_data", "with_natural_clients"]


@dataclass(frozen=True)
class TaskData:
    """The splits a simulation trains and evaluates on, with what the run records about them."""

    splits: DatasetSplits
    #: one group value per training row (``--by``), or None
    groups: np.ndarray | None = None
    #: recorded with the run (``fedloom runs show``): the data description and what was fitted on it
    description: dict[str, Any] = field(default_factory=dict)


def load_task_data(config: SimConfig) -> TaskData:
    """The built-in dataset ``config.dataset``, or the local one ``config.data`` describes."""
    if not config.data:
        return TaskData(load_dataset(config.dataset_name(), config.data_dir, compact=True))
    from fedloom.data import load_data

    spec = data_spec_for(config.data, config.seed, config.partition_by)
    loaded = load_data(spec)
    description: dict[str, Any] = {
        "spec": spec.to_mapping(),
        "feature_names": list(loaded.feature_names),
        "class_names": list(loaded.class_names),
        "preprocessing": dict(loaded.preprocessing),
    }
    if loaded.groups is not None:
        description["clients"] = natural_names(loaded.groups)  # client k holds group clients[k]
    return TaskData(loaded.splits, loaded.groups, description)


def with_natural_clients(config: SimConfig, data: TaskData) -> SimConfig:
    """``config`` with one client per group for ``--partition natural``; otherwise ``config`` itself.

    A ``clients`` left at its default follows the groups; any other value must equal their
    number (the natural partition refuses a mismatch, naming both numbers).
    """
    if config.partition != "natural":
        return config
    if data.groups is None:
        raise ConfigError(
            "partition natural needs a local dataset with a group column: --data KIND:PATH --by COL"
            " (e.g. --data table:hospital.csv --target outcome --by site)"
        )
    default = SimConfig.__dataclass_fields__["clients"].default
    if config.clients != default:
        return config
    return dataclasses.replace(config, clients=len(data.description["clients"]))
