"""The table loader: a CSV or Parquet file -> standardised float32 features and class ids.

The order matters and is the point of this module: find the used columns (or name the
missing one), apply the missing-value policy row by row, fix the classes over all rows,
split train/test (or read the test file), and only then fit the encoders on the training
rows and apply them to both splits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.dataset import ArrayDataset, DatasetSplits
from fedloom.data.digits import stratified_split
from fedloom.data.labels import encode_labels, label_levels
from fedloom.data.loaded import LoadedData
from fedloom.data.spec import DataSpec
from fedloom.data.table_features import TableEncoder, fit_encoder, level_texts
from fedloom.data.table_read import RawTable, missing_mask, read_table_file

log = logging.getLogger("fedloom.data")
#: the label column of a Hugging Face dataset when the spec names none
DEFAULT_TARGET = "label"


@dataclass(frozen=True)
class _Part:
    """The usable rows of one table (after the missing-value policy) and how many were dropped."""

    table: RawTable
    rows: np.ndarray
    dropped: int


def load_table(spec: DataSpec) -> LoadedData:
    """Load ``spec.path`` (and ``spec.test_path``) as a table; see :func:`load_raw_tables`."""
    table = read_table_file(spec.path)
    test_table = read_table_file(spec.test_path) if spec.test_path is not None else None
    return load_raw_tables(spec, table, test_table, name=Path(spec.path).stem)


def load_raw_tables(spec: DataSpec, table: RawTable, test_table: RawTable | None, *, name: str) -> LoadedData:
    """Features, labels and groups of ``table`` (train, or train + test) and ``test_table``."""
    target = spec.target or DEFAULT_TARGET
    columns = feature_columns(spec, table)
    used = (*columns, target, *((spec.by,) if spec.by else ()))
    parts = [_usable(spec, t, used, target) for t in (table, test_table) if t is not None]
    labels = [[str(cell) for cell in part.table.column(target)[part.rows]] for part in parts]
    classes = spec.classes or label_levels([label for part_labels in labels for label in part_labels])
    ids = [
        encode_labels(part_labels, classes, _row_namer(part), target)
        for part, part_labels in zip(parts, labels, strict=True)
    ]
    if test_table is None:
        train_idx, test_idx = stratified_split(ids[0], spec.test_fraction, spec.seed)
        train, test = _Part(table, parts[0].rows[train_idx], 0), _Part(table, parts[0].rows[test_idx], 0)
        y_train, y_test = ids[0][train_idx], ids[0][test_idx]
    else:
        train, test, y_train, y_test = parts[0], parts[1], ids[0], ids[1]
    encoder = fit_encoder(train.table, train.rows, columns, spec)
    splits = DatasetSplits(
        name=name,
        train=ArrayDataset(encoder.transform(train.table, train.rows), y_train, len(classes)),
        test=ArrayDataset(encoder.transform(test.table, test.rows), y_test, len(classes)),
    )
    groups = None if spec.by is None else np.asarray(level_texts(train.table.column(spec.by)[train.rows]), dtype=str)
    record = _record(spec, table, columns, classes, parts, (train, test), encoder)
    return LoadedData(splits, groups, encoder.feature_names, tuple(classes), record)


def _record(
    spec: DataSpec,
    table: RawTable,
    columns: tuple[str, ...],
    classes: tuple[str, ...],
    parts: list[_Part],
    splits: tuple[_Part, _Part],
    encoder: TableEncoder,
) -> dict[str, Any]:
    """What the load did, as JSON data: columns, classes, rows kept and dropped, fitted encoders."""
    train, test = splits
    unseen = {
        "train": encoder.unseen_levels(train.table, train.rows),
        "test": encoder.unseen_levels(test.table, test.rows),
    }
    if any(unseen.values()):
        log.info("%s: levels outside the categories, encoded as all zeros: %s", table.source, unseen)
    return {
        "kind": "table",
        "source": table.source,
        "target": spec.target or DEFAULT_TARGET,
        "features": list(columns),
        "classes": list(classes),
        "missing": spec.missing,
        "dropped_rows": [part.dropped for part in parts],
        "rows": {"train": len(train.rows), "test": len(test.rows)},
        "unseen_levels": unseen,
        **encoder.record(),
    }


def feature_columns(spec: DataSpec, table: RawTable) -> tuple[str, ...]:
    """The input columns: ``spec.features``, or every column but the target and ``by``."""
    if spec.features is not None:
        for column in spec.features:
            table.column(column)  # a DataError naming it and the columns present
        return spec.features
    skip = {spec.target or DEFAULT_TARGET, spec.by}
    columns = tuple(column for column in table.columns if column not in skip)
    stray = [column for column in spec.categorical if column not in table.columns]
    if stray:
        table.column(stray[0])
    if not columns:
        raise DataError(f"{table.source}: no feature column is left once the target and by columns are set aside")
    return columns


def _row_namer(part: _Part) -> Callable[[int], str]:
    """Where the ``i``-th usable row of ``part`` lies in its file, for error messages."""
    return lambda i: part.table.where(int(part.rows[i]))


def _usable(spec: DataSpec, table: RawTable, used: tuple[str, ...], target: str) -> _Part:
    """The rows to keep under ``spec.missing``; a refused missing cell names row and column."""
    keep = np.ones(len(table), dtype=bool)
    for column in used:
        cells = table.column(column)
        missing = missing_mask(cells)
        if not missing.any():
            continue
        if spec.missing == "drop":
            keep &= ~missing
            continue
        label_or_group = column in (target, spec.by)
        if spec.missing == "error" or label_or_group:
            row = int(np.flatnonzero(missing)[0])
            fix = "set missing = drop" if label_or_group else "set missing = drop | mean | median | zero"
            raise DataError(f"{table.where(row)}, column {column!r}: missing value; {fix}, or fill it in")
    rows = np.flatnonzero(keep).astype(np.int64)
    dropped = len(table) - rows.size
    if dropped:
        log.info("%s: dropped %d of %d rows with missing values (missing = drop)", table.source, dropped, len(table))
    if rows.size == 0:
        raise DataError(f"{table.source}: every row has a missing value in a used column; none is left")
    return _Part(table, rows, dropped)
