"""Hugging Face ``datasets``: an in-memory ``Dataset``/``DatasetDict``, or one saved with ``save_to_disk``.

Never the hub: ``hf:PATH`` is a local folder read with ``datasets.load_from_disk``, and the
loader switches the library offline (``HF_DATASETS_OFFLINE=1``, ``HF_HUB_OFFLINE=1``) before
importing it, so nothing can be fetched behind the user's back at run time.

A dataset with an ``Image`` column goes through the image path (Pillow, resize, per-channel
standardisation on the training images); any other dataset is a table and goes through
the table path (numeric and categorical columns, missing values, scaling), exactly as a
CSV would. A ``ClassLabel`` target keeps the dataset's own class order and names.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError, DataError
from fedloom.data.digits import stratified_split
from fedloom.data.extras import require
from fedloom.data.image_folder import image_pixels, pixels_to_loaded
from fedloom.data.labels import encode_labels, label_levels
from fedloom.data.loaded import LoadedData
from fedloom.data.spec import DataSpec
from fedloom.data.table import DEFAULT_TARGET, load_raw_tables
from fedloom.data.table_read import RawTable, columns_from_arrow, is_missing

#: the ``path`` of a spec made for a dataset passed in Python
IN_MEMORY = "<in-memory>"


def load_hf_from_disk(spec: DataSpec) -> LoadedData:
    """``hf:PATH``: a dataset saved with ``save_to_disk`` (and ``test_path``, if given)."""
    test = _load_from_disk(spec.test_path) if spec.test_path is not None else None
    return from_hf_dataset(_load_from_disk(spec.path), spec, test=test)


def from_hf_dataset(dataset: Any, spec: DataSpec | None = None, *, test: Any = None) -> LoadedData:
    """A ``datasets.Dataset`` or ``DatasetDict`` (``train`` [+ ``test``] splits) -> :class:`LoadedData`."""
    _go_offline()
    spec = spec if spec is not None else DataSpec("hf", IN_MEMORY)
    if spec.kind != "hf":
        raise ConfigError(f"from_hf_dataset needs a DataSpec of kind 'hf', got {spec.kind!r}")
    train, held = _pick_splits(dataset, test, spec.path)
    target = spec.target or DEFAULT_TARGET
    for part in (train, held):
        if part is not None and target not in part.column_names:
            raise DataError(
                f"{spec.path}: no column {target!r} (the target); the columns present are {part.column_names}"
            )
    label_feature = train.features[target]
    names = getattr(label_feature, "names", None)  # a ClassLabel's names, in class-id order
    if names is not None and spec.classes is None:
        spec = replace(spec, classes=tuple(str(n) for n in names))
    images = _image_columns(train, spec, target)
    if images:
        return _load_images(spec, train, held, images[0], target, names)
    table = _as_table(train, target, names, spec.path, "train")
    held_table = None if held is None else _as_table(held, target, names, spec.path, "test")
    return load_raw_tables(spec, table, held_table, name=Path(spec.path).name or "hf")


def _go_offline() -> None:
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    require("datasets", "hf", "Hugging Face datasets")


def _load_from_disk(path: str) -> Any:
    _go_offline()
    import datasets

    if "://" in path:
        raise DataError(f"{path}: hf:PATH reads a local folder saved with save_to_disk; fedloom never downloads")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; save the dataset with dataset.save_to_disk(PATH) first")
    try:
        return datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"{folder}: not a dataset saved with save_to_disk ({exc})") from exc


def _pick_splits(dataset: Any, test: Any, source: str) -> tuple[Any, Any]:
    """The training ``Dataset`` and the test one (``None``: hold out ``test_fraction``)."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise DataError(f"{source}: the DatasetDict has no 'train' split, only {sorted(dataset)}")
        if test is None and "test" in dataset:
            test = dataset["test"]
        dataset = dataset["train"]
    if isinstance(test, datasets.DatasetDict):
        if "test" not in test:
            raise DataError(f"{source}: the test DatasetDict has no 'test' split, only {sorted(test)}")
        test = test["test"]
    for part in (dataset, test):
        if part is not None and not isinstance(part, datasets.Dataset):
            raise DataError(f"{source}: expected a datasets.Dataset or DatasetDict, got {type(part).__name__}")
    if len(dataset) == 0:
        raise DataError(f"{source}: the training split has no rows")
    return dataset, test


def _image_columns(dataset: Any, spec: DataSpec, target: str) -> list[str]:
    """The ``Image`` columns to read (``features`` may pick one), never the target or ``by``."""
    import datasets

    found = [c for c, f in dataset.features.items() if isinstance(f, datasets.Image) and c not in (target, spec.by)]
    if spec.features is not None:
        found = [c for c in found if c in spec.features]
    if len(found) > 1:
        raise DataError(f"{spec.path}: several image columns {found}; pick one with features = ['COLUMN']")
    return found


def _as_table(part: Any, target: str, names: Any, source: str, split: str) -> RawTable:
    """A split as a :class:`RawTable`, the ClassLabel target as its names."""
    table = columns_from_arrow(part.with_format("arrow")[:], f"{source} [{split}]")
    if names is None:
        return table
    return RawTable(table.source, {**table.columns, target: _label_names(table.columns[target], names)})


def _label_names(cells: np.ndarray, names: Any) -> np.ndarray:
    """ClassLabel ids -> names (a missing label, ``None`` or -1, stays missing)."""
    out = np.empty(len(cells), dtype=object)
    out[:] = [None if is_missing(cell) or cell < 0 else str(names[cell]) for cell in cells]
    return out


def _load_images(spec: DataSpec, train: Any, held: Any, column: str, target: str, names: Any) -> LoadedData:
    """An image dataset: decode with Pillow, ids from the target, groups from ``by``."""
    x, texts = _decode_split(train, column, target, names, spec, "train")
    classes = spec.classes or label_levels(texts)
    y = encode_labels(texts, classes, lambda i: f"{spec.path} [train]: row {i + 1}", target)
    groups = None if spec.by is None else _group_ids(train, spec.by, spec.path)
    if held is None:
        train_idx, test_idx = stratified_split(y, spec.test_fraction, spec.seed)
        train_part, test_part = (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
        groups = None if groups is None else groups[train_idx]
    else:
        x_held, held_texts = _decode_split(held, column, target, names, spec, "test", size=x.shape[2:])
        y_held = encode_labels(held_texts, classes, lambda i: f"{spec.path} [test]: row {i + 1}", target)
        train_part, test_part = (x, y), (x_held, y_held)
    loaded = pixels_to_loaded(spec, train_part, test_part, classes, spec.path, {"image_column": column})
    return replace(loaded, groups=groups)


def _decode_split(
    part: Any, column: str, target: str, names: Any, spec: DataSpec, split: str, size: Any = None
) -> tuple[np.ndarray, list[str]]:
    """uint8 pixels ``(n, C, H, W)`` and label texts; a bad image or missing label names its row."""
    import datasets
    from PIL import Image

    raw = part.cast_column(column, datasets.Image(decode=False))
    size = spec.image_size or size
    pixels: list[np.ndarray] = []
    texts: list[str] = []
    for row, item in enumerate(raw):
        where = f"{spec.path} [{split}]: row {row + 1}"
        label = item[target]
        if is_missing(label) or (names is not None and label < 0):
            raise DataError(f"{where}, column {target!r}: missing label; fix the row or drop it from the dataset")
        texts.append(str(names[label]) if names is not None else str(label))
        cell = item[column] or {}
        try:
            source = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell.get("path")
            if source is None:
                raise ValueError("no image in this row")
            with Image.open(source) as image:
                pixels.append(image_pixels(image, spec.image_size, spec.grayscale))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{where}, column {column!r}: not a readable image ({exc})") from exc
        if size is None:
            size = tuple(pixels[0].shape[1:])
        if pixels[-1].shape[1:] != tuple(size):
            raise DataError(f"{where}, column {column!r}: image size differs; set image_size = [HEIGHT, WIDTH]")
    return np.stack(pixels), texts


def _group_ids(part: Any, by: str, source: str) -> np.ndarray:
    if by not in part.column_names:
        raise DataError(f"{source}: no column {by!r} (the by option); the columns present are {part.column_names}")
    values = part[by]
    missing = [row for row, value in enumerate(values) if is_missing(value)]
    if missing:
        raise DataError(f"{source} [train]: row {missing[0] + 1}, column {by!r}: missing group id")
    return np.asarray([str(value) for value in values], dtype=str)
