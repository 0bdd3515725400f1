"""NumPy arrays as a dataset: an ``.npz`` file (``arrays:data.npz``) or arrays in Python.

The file is read with ``allow_pickle=False``: an ``.npz`` may come from anywhere, and an
object array inside it would run arbitrary code when unpickled. Only plain numeric (and,
for labels and groups, string) arrays are accepted.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.dataset import ArrayDataset, DatasetSplits
from fedloom.data.digits import stratified_split
from fedloom.data.labels import encode_labels, label_levels
from fedloom.data.loaded import LoadedData
from fedloom.data.spec import DataSpec
from fedloom.data.table_features import SAFE_MAGNITUDE

#: the arrays an ``.npz`` file holds (the test pair is optional: else ``test_fraction`` is held out)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(spec: DataSpec) -> LoadedData:
    """``x_train``, ``y_train`` [, ``x_test``, ``y_test``] [, the ``by`` array] from ``spec.path``."""
    file = Path(spec.path).expanduser()
    arrays = _read_npz(file)
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{file}: no array {key!r}; the file holds {sorted(arrays)} (needs {', '.join(NPZ_KEYS)})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{file}: x_test and y_test come together; the file holds {sorted(arrays)}")
    groups = None
    if spec.by is not None:
        if spec.by not in arrays:
            raise DataError(f"{file}: no array {spec.by!r} (the by option); the file holds {sorted(arrays)}")
        groups = arrays[spec.by]
    return from_arrays(
        arrays["x_train"],
        arrays["y_train"],
        x_test=arrays.get("x_test"),
        y_test=arrays.get("y_test"),
        groups=groups,
        classes=spec.classes,
        scale=spec.scaling,
        test_fraction=spec.test_fraction,
        seed=spec.seed,
        name=file.stem,
    )


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    classes: tuple[str, ...] | None = None,
    scale: str = "none",
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str = "arrays",
) -> LoadedData:
    """Arrays -> :class:`LoadedData`: x as float32, labels as class ids, test held out unless given.

    Non-negative integer labels are class ids already (``classes`` may name them); any other
    labels (strings, floats) are mapped through their sorted distinct values. ``groups`` has
    one id per row of ``x``. ``scale`` (``none``, ``standard``, ``minmax``) is fitted per
    feature on the training rows only.
    """
    spec = DataSpec("arrays", name, classes=classes, scale=scale, test_fraction=test_fraction, seed=seed)
    x_all = _features(x, "x")
    if (x_test is None) != (y_test is None):
        raise DataError("x_test and y_test come together: pass both or neither")
    pairs = [(x_all, _labels(y, "y", len(x_all)))]
    if x_test is not None and y_test is not None:
        x_held = _features(x_test, "x_test")
        if x_held.shape[1:] != x_all.shape[1:]:
            raise DataError(f"x_test samples have shape {x_held.shape[1:]}, x samples {x_all.shape[1:]}")
        pairs.append((x_held, _labels(y_test, "y_test", len(x_held))))
    ids, class_names = _class_ids([labels for _, labels in pairs], spec.classes)
    group_ids = None if groups is None else _groups(groups, len(x_all))
    if len(pairs) == 1:
        train_idx, test_idx = stratified_split(ids[0], spec.test_fraction, spec.seed)
        x_train, y_train, x_held, y_held = x_all[train_idx], ids[0][train_idx], x_all[test_idx], ids[0][test_idx]
        group_ids = None if group_ids is None else group_ids[train_idx]
    else:
        x_train, y_train, x_held, y_held = x_all, ids[0], pairs[1][0], ids[1]
    shift, divisor = _fit_scale(x_train, spec.scaling)
    splits = DatasetSplits(
        name=name,
        train=ArrayDataset(_apply(x_train, shift, divisor, "x"), y_train, len(class_names)),
        test=ArrayDataset(_apply(x_held, shift, divisor, "x_test"), y_held, len(class_names)),
    )
    record: dict[str, Any] = {"kind": "arrays", "source": name, "classes": list(class_names), "scale": spec.scaling}
    if spec.scaling != "none":
        record |= {"shift": shift.ravel().tolist(), "divisor": divisor.ravel().tolist()}
    return LoadedData(splits, group_ids, (), class_names, record)


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    if not file.is_file():
        raise DataError(f"{file}: no such .npz file (fedloom reads local files only, never downloads)")
    if not zipfile.is_zipfile(file):  # else numpy would take it for a pickle
        raise DataError(f"{file}: not a readable .npz file (not a zip archive); write it with numpy.savez")
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:  # an object array: numpy refuses to unpickle it
        raise DataError(f"{file}: holds an object array, which fedloom will not unpickle ({exc})") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{file}: not a readable .npz file ({exc})") from exc


def _features(x: object, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DataError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{name} must have shape (samples, features...) with at least one sample, got {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{name} must hold numbers, got dtype {x.dtype}")
    values = x.astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{name}{list(index)} is {values[index]}: features must be finite numbers")
    return values


def _labels(y: object, name: str, rows: int) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != rows:
        shape = getattr(y, "shape", type(y).__name__)
        raise DataError(f"{name} must be a 1-D numpy array with one label per sample ({rows}), got {shape}")
    if y.dtype == object:
        raise DataError(f"{name} has dtype object; pass integer or string labels")
    return y


def _class_ids(labels: list[np.ndarray], classes: tuple[str, ...] | None) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Class ids per label array: integer ids kept as they are, anything else by sorted value."""
    if all(np.issubdtype(y.dtype, np.integer) and (y.size == 0 or int(y.min()) >= 0) for y in labels):
        ids = [y.astype(np.int64) for y in labels]
        count = max(int(y.max()) + 1 if y.size else 0 for y in ids)
        names = classes if classes is not None else tuple(str(i) for i in range(count))
        if count > len(names):
            raise DataError(f"labels go up to {count - 1} but classes names only {len(names)}: {list(names)}")
        return ids, names
    texts = [[str(v) for v in y.tolist()] for y in labels]
    names = classes if classes is not None else label_levels([t for part in texts for t in part])
    owners = ("y", "y_test")
    ids = [encode_labels(part, names, _index_namer(w), "label") for part, w in zip(texts, owners, strict=False)]
    return ids, names


def _index_namer(name: str) -> Callable[[int], str]:
    return lambda i: f"{name}[{i}]"


def _groups(groups: object, rows: int) -> np.ndarray:
    if not isinstance(groups, np.ndarray) or groups.ndim != 1 or len(groups) != rows:
        shape = getattr(groups, "shape", type(groups).__name__)
        raise DataError(f"groups must be a 1-D array with one id per row of x ({rows}), got {shape}")
    return np.asarray([str(g) for g in groups.tolist()], dtype=str)


def _fit_scale(x: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(shift, divisor)`` from the training rows; safe for huge and tiny values."""
    ones = np.ones(x.shape[1:])
    if scale == "none" or x.shape[0] == 0:
        return np.zeros(x.shape[1:]), ones
    if scale == "minmax":
        low = x.min(axis=0)
        spread = x.max(axis=0) - low
        return low, np.where((spread > 0) & np.isfinite(spread), spread, ones)
    peak = np.max(np.abs(x), axis=0)
    peak = np.where((peak > SAFE_MAGNITUDE[0]) & (peak < SAFE_MAGNITUDE[1]) | (peak == 0), ones, peak)
    scaled = x / peak
    std = scaled.std(axis=0) * peak
    return np.asarray(scaled.mean(axis=0) * peak), np.where(std > 0, std, ones)


def _apply(x: np.ndarray, shift: np.ndarray, divisor: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by index
        out: np.ndarray = ((x - shift) / divisor).astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{name}{list(index)} = {x[index]} does not fit in float32; pass scale='standard'")
    return out
