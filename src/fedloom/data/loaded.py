"""What every loader returns: the splits, plus what a run must record to be reproduced.

The trainers only need :class:`DatasetSplits`; the rest is for the people and tools around
them: the natural-partition ids for the partitioner, the names of the feature columns and
classes for reports, and the fitted preprocessing (levels, imputation values, scaler
constants) as plain JSON data that a run stores beside its config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.dataset import DatasetSplits


@dataclass(frozen=True)
class LoadedData:
    """A loaded dataset: ``splits`` for training, the rest to partition, report and record.

    ``groups``: one id (a string) per TRAIN row, from the spec's ``by`` column, or ``None``.
    ``feature_names``: one name per feature column after encoding (``"colour=red"`` for a
    one-hot column), or ``()`` for images and plain arrays. ``class_names``: the label of
    each class id. ``preprocessing``: the fitted preprocessing, JSON-able.
    """

    splits: DatasetSplits
    groups: np.ndarray | None
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    preprocessing: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.groups is not None and self.groups.shape != (len(self.splits.train),):
            raise DataError(
                f"groups must hold one id per training row ({len(self.splits.train)}), got shape {self.groups.shape}"
            )
        if len(self.class_names) != self.splits.num_classes:
            raise DataError(f"{len(self.class_names)} class names for {self.splits.num_classes} classes")
        try:
            json.dumps(self.preprocessing)
        except (TypeError, ValueError) as exc:
            raise DataError(f"the preprocessing record must be JSON data: {exc}") from exc
