"""In-memory datasets as plain NumPy arrays.

Partitioners, trainers and the simulation driver only need ``(x, y)`` arrays and the
number of classes, so a dataset is nothing more: no framework ``Dataset`` object, which
keeps the data layer usable from NumPy, PyTorch and worker processes alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedloom.core.errors import DataError

#: a standardisation constant: one value for every channel, or one per channel (axis 1 of ``x``)
Stat = float | tuple[float, ...]


@dataclass(frozen=True)
class ArrayDataset:
    """Features ``x`` (float32, ``(n, C, H, W)`` for images) and int64 labels ``y`` of shape ``(n,)``.

    Validated once at construction so every consumer can trust lengths, dtypes and the
    label range instead of re-checking (a label outside ``[0, num_classes)`` would only
    surface later as an obscure index error inside a loss function).
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    #: ``(mean, std)`` when ``x`` holds raw uint8 pixels: :meth:`subset` and :meth:`materialised`
    #: then return ``(x / 255 - mean) / std`` as float32. Keeping pixels compact is 4x less memory
    #: for a dataset that a simulation loads once and shares with every worker. Colour images
    #: give one mean and one std per channel (a tuple as long as ``x.shape[1]``).
    standardise: tuple[Stat, Stat] | None = None

    def __post_init__(self) -> None:
        _check_dataset(self.x, self.y, self.num_classes)
        if self.standardise is not None:
            if self.x.dtype != np.uint8:
                raise DataError(f"standardise needs uint8 pixels in x, got dtype {self.x.dtype}")
            for value in self.standardise:
                _channel_stat(value, self.x)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        """The samples at ``indices`` (copied), e.g. one client's partition."""
        idx = np.asarray(indices, dtype=np.int64)
        x = self.x[idx]
        if self.standardise is not None:
            x = standardise_pixels(x, *self.standardise)
        return ArrayDataset(x, self.y[idx], self.num_classes)

    def materialised(self) -> ArrayDataset:
        """The whole dataset with float features (a copy if it is stored as compact pixels)."""
        return self if self.standardise is None else self.subset(np.arange(len(self)))

    def class_counts(self) -> np.ndarray:
        """Number of samples per class (length ``num_classes``)."""
        return np.bincount(self.y, minlength=self.num_classes).astype(np.int64)


@dataclass(frozen=True)
class DatasetSplits:
    """A named dataset's train and test splits."""

    name: str
    train: ArrayDataset
    test: ArrayDataset

    @property
    def num_classes(self) -> int:
        """Number of classes (the same in both splits)."""
        return self.train.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``; what a model factory needs."""
        return tuple(int(d) for d in self.train.x.shape[1:])


def standardise_pixels(pixels: np.ndarray, mean: Stat, std: Stat) -> np.ndarray:
    """uint8 pixels -> float32 ``(pixels / 255 - mean) / std`` (a new array), per channel for tuples."""
    x = pixels.astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    x -= _channel_stat(mean, pixels)
    x /= _channel_stat(std, pixels)
    return x


def _channel_stat(value: Stat, x: np.ndarray) -> np.ndarray:
    """``value`` as float32 broadcastable over ``x`` ``(n, C, ...)``: a scalar, or ``(C, 1, ...)``."""
    if not isinstance(value, tuple):
        return np.asarray(value, dtype=np.float32)  # 0-d: the same value for every channel
    channels = x.shape[1] if x.ndim >= 2 else None
    if len(value) != channels:
        raise DataError(f"standardise has {len(value)} per-channel values but x of shape {x.shape} has {channels}")
    return np.asarray(value, dtype=np.float32).reshape((len(value),) + (1,) * (x.ndim - 2))


def _check_dataset(x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    """Raise :class:`DataError` unless ``x``/``y``/``num_classes`` describe a valid dataset."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"x and y must be numpy arrays, got {type(x).__name__} and {type(y).__name__}")
    if y.ndim != 1:
        raise DataError(f"y must be 1-D (one label per sample), got shape {y.shape}")
    if x.ndim < 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"x and y must have the same length, got x {x.shape} and y {y.shape}")
    if y.dtype != np.int64:
        raise DataError(f"y must have dtype int64, got {y.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}), got min {int(y.min())} and max {int(y.max())}")
