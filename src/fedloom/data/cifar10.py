"""CIFAR-10 from its six BINARY batch files, parsed with NumPy alone.

Only the binary version (``cifar-10-binary.tar.gz``) is read, never the "python
version": that one is a set of pickles, and unpickling a downloaded file runs whatever
code it holds. Nothing is downloaded at run time either (a hidden fetch is a security
and a reproducibility hazard): the user unpacks the archive once and points fedloom at it.

Each file is a sequence of 3,073-byte records: one label byte (0-9), then the 32x32
red plane, the green plane and the blue plane, each row-major. So a file reshapes
straight into ``(n, 3, 32, 32)``, the NCHW layout PyTorch convolutions expect.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.dataset import ArrayDataset, DatasetSplits, standardise_pixels

ENV_VAR = "FEDLOOM_DATA"
#: the folder ``tar xzf cifar-10-binary.tar.gz`` creates
SUBFOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
NUM_CLASSES = 10
CHANNELS, HEIGHT, WIDTH = 3, 32, 32
RECORD_BYTES = 1 + CHANNELS * HEIGHT * WIDTH
#: per-channel (R, G, B) mean and standard deviation of the 50,000 training images scaled to [0, 1]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SOURCE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def load_cifar10(data_dir: str | Path | None = None, *, compact: bool = False) -> DatasetSplits:
    """Load CIFAR-10: x float32 ``(n, 3, 32, 32)`` standardised per channel, y int64 in [0, 10).

    The files are parsed once per process and folder; every call returns fresh float
    arrays. ``compact=True`` keeps the shared, read-only uint8 pixels (about 150 MB for the
    training set rather than 600 MB) and standardises each subset when it is taken.
    """
    directory = resolve_data_dir(data_dir)
    _check_files_present(directory)
    train_x, train_y, test_x, test_y = _parse_cached(directory.resolve())
    return DatasetSplits(
        name="cifar10",
        train=_split(train_x, train_y, compact),
        test=_split(test_x, test_y, compact),
    )


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder to read: ``data_dir``, else ``$FEDLOOM_DATA``, else ``~/fedloom-data``.

    A folder holding a ``cifar-10-batches-bin`` sub-folder (where the archive was
    unpacked) means that sub-folder, so one ``FEDLOOM_DATA`` root can serve several datasets.
    """
    if data_dir is not None and str(data_dir) != "":
        return _maybe_subfolder(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR, "")
    return _maybe_subfolder(Path(env).expanduser() if env else default_root())


def default_root() -> Path:
    """Where CIFAR-10 is looked for when neither ``--data-dir`` nor ``$FEDLOOM_DATA`` is given."""
    return Path.home() / "fedloom-data"


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch as read-only uint8 images ``(n, 3, 32, 32)`` and uint8 labels ``(n,)``.

    The size must be a whole number of records and every label a class index, else a
    :class:`DataError` names the file: a truncated download must not become a shorter,
    silently shifted dataset.
    """
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(missing_message(path.parent, [path.name])) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(
            f"{path}: {raw.size} bytes is not a positive multiple of {RECORD_BYTES} "
            f"(1 label byte + {RECORD_BYTES - 1} pixel bytes per image); the file is truncated or not "
            f"a CIFAR-10 binary batch (unpack {SOURCE_URL} again)"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = np.ascontiguousarray(records[:, 0])
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{path}: record {int(bad[0])} has label {int(labels[bad[0]])}, outside [0, {NUM_CLASSES}); "
            "the file is corrupt or not a CIFAR-10 batch (CIFAR-100 files have two label bytes)"
        )
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, CHANNELS, HEIGHT, WIDTH)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def missing_message(directory: Path, missing: list[str]) -> str:
    """The error text for absent files: where we looked and exactly how to get them."""
    root = directory.parent if directory.name == SUBFOLDER else directory
    return (
        f"CIFAR-10 not found in {directory} (missing: {', '.join(missing)}). "
        "fedloom never downloads data at run time. To get it: download the binary version "
        f"{SOURCE_URL} and unpack it with `tar xzf cifar-10-binary.tar.gz -C {root}` "
        f"(this creates {root / SUBFOLDER}); or unpack it anywhere and pass `--data-dir FOLDER` "
        f"or set {ENV_VAR}=FOLDER. The python version (cifar-10-python.tar.gz) is pickled and is not read."
    )


def _split(images: np.ndarray, labels: np.ndarray, compact: bool) -> ArrayDataset:
    y = labels.astype(np.int64)
    if compact:
        return ArrayDataset(images, y, NUM_CLASSES, standardise=(MEAN, STD))
    return ArrayDataset(standardise_pixels(images, MEAN, STD), y, NUM_CLASSES)


def _maybe_subfolder(path: Path) -> Path:
    sub = path / SUBFOLDER
    return sub if sub.is_dir() else path


def _check_files_present(directory: Path) -> None:
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (directory / name).is_file()]
    if missing:
        raise DataError(missing_message(directory, missing))


@lru_cache(maxsize=2)
def _parse_cached(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse the six files once per resolved folder; the arrays are read-only."""
    batches = [read_batch(directory / name) for name in TRAIN_FILES]
    train_x = np.concatenate([images for images, _ in batches])
    train_y = np.concatenate([labels for _, labels in batches])
    test_x, test_y = read_batch(directory / TEST_FILE)
    for array in (train_x, train_y):
        array.setflags(write=False)
    return train_x, train_y, test_x, test_y
