"""fedloom.data — dataset loaders returning plain NumPy arrays (:class:`DatasetSplits`).

Named datasets (:func:`load_dataset`) and a user's own data described by a
:class:`DataSpec` (:func:`load_data`: image folders, CSV/Parquet tables, Hugging Face
datasets saved to disk, NumPy arrays).
"""

from __future__ import annotations

from pathlib import Path

from fedloom.core.errors import ConfigError
from fedloom.data.arrays import from_arrays
from fedloom.data.cifar10 import load_cifar10
from fedloom.data.dataset import ArrayDataset, DatasetSplits
from fedloom.data.digits import load_digits
from fedloom.data.fashion_mnist import load_fashion_mnist
from fedloom.data.hf_datasets import from_hf_dataset
from fedloom.data.loaded import LoadedData
from fedloom.data.loading import load_data
from fedloom.data.spec import DATA_KINDS, DataSpec, parse_data_spec

#: canonical dataset names accepted by :func:`load_dataset` (and the CLI).
DATASETS = ("fmnist", "digits", "cifar10")
_ALIASES = {"fashion-mnist": "fmnist", "fashion_mnist": "fmnist", "cifar-10": "cifar10", "cifar_10": "cifar10"}


def load_dataset(name: str, data_dir: str | Path | None = None, *, compact: bool = False) -> DatasetSplits:
    """Load a dataset by name, so configs and the CLI can pick one with a string.

    ``data_dir`` only matters for file-based datasets (Fashion-MNIST, CIFAR-10); digits ship
    inside scikit-learn and ignore it. ``compact`` keeps image pixels as uint8 where the
    dataset supports it (see :class:`ArrayDataset.standardise`).
    """
    canonical = _ALIASES.get(name.lower(), name.lower())
    if canonical == "fmnist":
        return load_fashion_mnist(data_dir, compact=compact)
    if canonical == "digits":
        return load_digits()
    if canonical == "cifar10":
        return load_cifar10(data_dir, compact=compact)
    aliases = ", ".join(sorted(_ALIASES))
    raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)} (aliases: {aliases})")


__all__ = [
    "DATASETS",
    "DATA_KINDS",
    "ArrayDataset",
    "DataSpec",
    "DatasetSplits",
    "LoadedData",
    "from_arrays",
    "from_hf_dataset",
    "load_data",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "parse_data_spec",
]
