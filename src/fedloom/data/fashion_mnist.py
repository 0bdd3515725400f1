"""Fashion-MNIST from the four IDX ``.gz`` files, parsed with gzip + struct + NumPy.

Nothing is ever downloaded at run time: simulations must be reproducible offline and a
hidden network fetch is both a security and a reproducibility hazard. The files come
from Debian's ``dataset-fashion-mnist`` package or from a folder the user points at.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.dataset import ArrayDataset, DatasetSplits, standardise_pixels

ENV_VAR = "FEDLOOM_DATA"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
SUBFOLDER = "fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
NUM_CLASSES = 10
#: pixel mean / std of the training set after scaling to [0, 1] (the usual constants).
MEAN = 0.2860
STD = 0.3530
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SOURCE_URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion)"


def load_fashion_mnist(data_dir: str | Path | None = None, *, compact: bool = False) -> DatasetSplits:
    """Load Fashion-MNIST: x float32 ``(n, 1, 28, 28)`` standardised, y int64 in [0, 10).

    The gz files are parsed once per process (about a second); every call returns fresh
    float arrays, so a caller that edits its copy in place cannot corrupt another's.
    ``compact=True`` keeps the shared, read-only uint8 pixels instead (55 MiB rather
    than 220 MiB) and standardises each subset when it is taken: what simulations use.
    """
    directory = resolve_data_dir(data_dir)
    _check_files_present(directory)
    raw = _parse_cached(directory.resolve())
    return DatasetSplits(
        name="fmnist",
        train=_split(raw[0], raw[1], compact),
        test=_split(raw[2], raw[3], compact),
    )


def _split(images: np.ndarray, labels: np.ndarray, compact: bool) -> ArrayDataset:
    y = labels.astype(np.int64)
    if compact:
        return ArrayDataset(images[:, None, :, :], y, NUM_CLASSES, standardise=(MEAN, STD))
    return ArrayDataset(standardise_pixels(images[:, None, :, :], MEAN, STD), y, NUM_CLASSES)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder to read: ``data_dir``, else ``$FEDLOOM_DATA``, else the Debian location.

    A folder that holds a ``fashion-mnist`` sub-folder means that sub-folder, so one
    ``FEDLOOM_DATA`` root can serve several datasets.
    """
    if data_dir is not None and str(data_dir) != "":
        return _maybe_subfolder(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR, "")
    if env:
        return _maybe_subfolder(Path(env).expanduser())
    return DEFAULT_DIR


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one gzipped IDX file of unsigned bytes whose header must carry ``magic``.

    IDX: a big-endian int32 magic (``0x00 0x00 0x08 ndim``), ``ndim`` big-endian int32
    sizes, then the data. Any mismatch raises :class:`DataError` naming the file, rather
    than returning a silently mis-shaped array.
    """
    data = _read_gzip(path)
    if len(data) < 4:
        raise DataError(f"{path}: file too short for an IDX header ({len(data)} bytes)")
    (found,) = struct.unpack(">i", data[:4])
    if found != magic:
        raise DataError(f"{path}: bad IDX magic number {found}, expected {magic}; the file is corrupt or not this one")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if any(d <= 0 for d in dims):
        raise DataError(f"{path}: invalid IDX dimensions {dims}")
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX body has {len(data) - header} bytes, dimensions {dims} need {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def missing_message(directory: Path, missing: list[str]) -> str:
    """The error text for absent files: where we looked and exactly how to get them."""
    return (
        f"Fashion-MNIST not found in {directory} (missing: {', '.join(missing)}). "
        "fedloom never downloads data at run time. To get it: "
        "on Debian/Ubuntu run `sudo apt-get install dataset-fashion-mnist` "
        f"(installs to {DEFAULT_DIR}); or download the four files {', '.join(FILES.values())} "
        f"from {SOURCE_URL} into a folder and pass `--data-dir FOLDER` or set {ENV_VAR}=FOLDER."
    )


def _maybe_subfolder(path: Path) -> Path:
    sub = path / SUBFOLDER
    return sub if sub.is_dir() else path


def _check_files_present(directory: Path) -> None:
    missing = [name for name in FILES.values() if not (directory / name).is_file()]
    if missing:
        raise DataError(missing_message(directory, missing))


def _read_gzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DataError(missing_message(path.parent, [path.name])) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from exc


@lru_cache(maxsize=4)
def _parse_cached(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse the four files once per resolved folder; the arrays are read-only views."""
    parsed = (
        _read_images(directory / FILES["train_images"]),
        _read_labels(directory / FILES["train_labels"]),
        _read_images(directory / FILES["test_images"]),
        _read_labels(directory / FILES["test_labels"]),
    )
    _check_pair(directory / FILES["train_images"], parsed[0], parsed[1])
    _check_pair(directory / FILES["test_images"], parsed[2], parsed[3])
    return parsed


def _read_images(path: Path) -> np.ndarray:
    images = read_idx(path, IMAGES_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{path}: images are {images.shape[1:]}, expected 28x28")
    return images


def _read_labels(path: Path) -> np.ndarray:
    labels = read_idx(path, LABELS_MAGIC)
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{path}: label {int(labels.max())} is outside [0, {NUM_CLASSES})")
    return labels


def _check_pair(images_path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path}: {images.shape[0]} images but {labels.shape[0]} labels")
