"""What a light device implements: ``fit(weights, config) -> (weights, num_samples, metrics)``.

The full :class:`fedloom.client.Trainer` needs fedloom's core types; a device that only has
NumPy gets the same round's instructions as a small frozen dataclass and answers with a
plain tuple. :func:`checked_result` holds the answer to what the aggregator will accept
(same names, shapes and dtypes as the global model, finite values, a positive sample
count, finite numeric metrics), so a wrong trainer is a clear error on the device
instead of an upload refusal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["LightFitConfig", "LightTrainer", "checked_result"]

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class LightFitConfig:
    """One round's local training settings, as the task's ``config`` carries them."""

    round: int
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_task(cls, config: Mapping[str, Any], round: int) -> LightFitConfig:
        """The task's config, checked: the types a trainer relies on, refused by name otherwise."""
        values = {"round": round, **{k: config[k] for k in ("epochs", "batch_size", "lr", "seed") if k in config}}
        for key in ("epochs", "batch_size", "seed"):
            if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool)):
                raise ValueError(f"task config field {key!r} must be an integer, got {values[key]!r}")
        if not isinstance(values.get("lr", 0.01), (int, float)) or not float(values.get("lr", 0.01)) > 0:
            raise ValueError(f"task config field 'lr' must be a positive number, got {values.get('lr')!r}")
        extra = config.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"task config field 'extra' must be an object, got {type(extra).__name__}")
        return cls(**values, extra=extra)


@runtime_checkable
class LightTrainer(Protocol):
    """A device's model and data: train the global ``weights`` locally as ``config`` says."""

    def fit(self, weights: Weights, config: LightFitConfig) -> tuple[Weights, int, Mapping[str, float]]: ...


def checked_result(
    result: object, reference: Mapping[str, np.ndarray], round: int
) -> tuple[Weights, int, dict[str, float]]:
    """``(weights, num_samples, metrics)`` if the trainer's answer is uploadable, else ValueError naming the part."""
    where = f"round {round}: trainer.fit"
    if not isinstance(result, tuple) or len(result) != 3:
        raise ValueError(f"{where} must return (weights, num_samples, metrics), got {type(result).__name__}")
    weights, num_samples, metrics = result
    if not isinstance(weights, Mapping) or set(weights) != set(reference):
        names = sorted(weights) if isinstance(weights, Mapping) else type(weights).__name__
        raise ValueError(f"{where} returned tensors {names}, but the global model has {sorted(reference)}")
    checked: Weights = {}
    for name, value in weights.items():
        array, like = np.asarray(value), reference[name]
        if array.shape != like.shape or array.dtype != like.dtype:
            raise ValueError(
                f"{where}: tensor {name!r} is {array.dtype}{list(array.shape)}, the global model's is "
                f"{like.dtype}{list(like.shape)}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{where}: tensor {name!r} holds NaN or Inf")
        checked[name] = array
    if not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"{where} returned num_samples {num_samples!r}; it must be an integer >= 1")
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{where} returned metrics of type {type(metrics).__name__}; give a name -> number mapping")
    numbers = {}
    for key, number in metrics.items():
        if isinstance(number, bool) or not isinstance(number, (int, float, np.number)) or not math.isfinite(number):
            raise ValueError(f"{where}: metric {key!r} = {number!r} is not a finite number")
        numbers[str(key)] = float(number)
    return checked, int(num_samples), numbers
