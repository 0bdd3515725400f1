"""Turning table columns into float32 features: numbers, one-hot levels, imputation, scaling.

Everything learnt from data (levels, imputation values, scaler constants) is fitted on the
TRAINING rows only and then applied unchanged to the test rows: fitting on all rows would
leak the test set into the model's inputs and flatter its accuracy. The fitted encoder is
plain data (:meth:`TableEncoder.record`), so a run can store exactly what it did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.spec import DataSpec
from fedloom.data.table_read import RawTable, is_missing, missing_mask

#: magnitudes whose squares neither overflow nor underflow float64 (see :func:`robust_mean_std`)
SAFE_MAGNITUDE = (1e-100, 1e100)


@dataclass(frozen=True)
class NumericColumn:
    """One numeric input: missing cells become ``fill``, then ``(value - shift) / divisor``."""

    name: str
    fill: float | None
    shift: float
    divisor: float


@dataclass(frozen=True)
class CategoricalColumn:
    """One categorical input, one-hot over ``levels``; any other level (or none) is all zeros."""

    name: str
    levels: tuple[str, ...]


@dataclass(frozen=True)
class TableEncoder:
    """The fitted column encoders, in input-column order."""

    columns: tuple[NumericColumn | CategoricalColumn, ...]
    scale: str

    @property
    def feature_names(self) -> tuple[str, ...]:
        """One name per output column: the column's, or ``column=level`` for a one-hot column."""
        names: list[str] = []
        for column in self.columns:
            if isinstance(column, CategoricalColumn):
                names += [f"{column.name}={level}" for level in column.levels]
            else:
                names.append(column.name)
        return tuple(names)

    def transform(self, table: RawTable, rows: np.ndarray) -> np.ndarray:
        """The float32 ``(len(rows), num_features)`` features of ``table``'s ``rows``."""
        blocks = [np.zeros((len(rows), 0), dtype=np.float32)]
        for column in self.columns:
            if isinstance(column, CategoricalColumn):
                blocks.append(one_hot(level_texts(table.column(column.name)[rows]), column.levels))
            else:
                blocks.append(_numeric_block(table, rows, column)[:, None])
        return np.concatenate(blocks, axis=1)

    def unseen_levels(self, table: RawTable, rows: np.ndarray) -> dict[str, int]:
        """Per categorical column, how many present cells of ``rows`` have no level (encoded as zeros)."""
        counts = {}
        for column in self.columns:
            if isinstance(column, CategoricalColumn):
                known = set(column.levels)
                texts = level_texts(table.column(column.name)[rows])
                counts[column.name] = sum(1 for text in texts if text is not None and text not in known)
        return {name: count for name, count in counts.items() if count}

    def record(self) -> dict[str, Any]:
        """The fitted encoders as JSON data, to store beside a run's config."""
        numeric = {c.name: {"fill": c.fill, "shift": c.shift, "divisor": c.divisor} for c in self._numeric()}
        levels = {c.name: list(c.levels) for c in self.columns if isinstance(c, CategoricalColumn)}
        return {"scale": self.scale, "numeric": numeric, "categories": levels}

    def _numeric(self) -> list[NumericColumn]:
        return [c for c in self.columns if isinstance(c, NumericColumn)]


def fit_encoder(table: RawTable, rows: np.ndarray, columns: tuple[str, ...], spec: DataSpec) -> TableEncoder:
    """Fit one encoder per column on the training ``rows`` of ``table``."""
    fitted: list[NumericColumn | CategoricalColumn] = []
    for name in columns:
        if name in spec.categorical:
            levels = spec.categories.get(name) or level_levels(level_texts(table.column(name)[rows]))
            fitted.append(CategoricalColumn(name, tuple(levels)))
        else:
            fitted.append(_fit_numeric(table, rows, name, spec))
    return TableEncoder(tuple(fitted), spec.scaling)


def numbers(table: RawTable, name: str, rows: np.ndarray) -> np.ndarray:
    """The float64 values of a numeric column's ``rows``, NaN where missing.

    A cell that is not a finite number is a DataError naming the file, row and column, and
    saying how to declare the column categorical if it holds categories.
    """
    cells: np.ndarray = table.column(name)[rows]
    filled: np.ndarray = cells.copy()
    filled[missing_mask(cells)] = np.nan
    values: np.ndarray | None
    try:
        values = filled.astype(np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or not np.isfinite(values[~np.isnan(values)]).all():
        _raise_first_non_number(table, name, rows, cells)
    assert values is not None
    return values


def level_texts(cells: np.ndarray) -> list[str | None]:
    """Categorical cells as level strings (``None`` where missing): ``3`` and ``"3"`` are one level."""
    return [None if is_missing(cell) else str(cell) for cell in cells]


def level_levels(texts: list[str | None]) -> tuple[str, ...]:
    """The sorted distinct levels seen (missing cells are not a level)."""
    return tuple(sorted({text for text in texts if text is not None}))


def one_hot(texts: list[str | None], levels: tuple[str, ...]) -> np.ndarray:
    """float32 ``(len(texts), len(levels))`` one-hot rows; an unknown or missing level is all zeros."""
    position = {level: index for index, level in enumerate(levels)}
    out = np.zeros((len(texts), len(levels)), dtype=np.float32)
    for row, text in enumerate(texts):
        index = position.get(text) if text is not None else None
        if index is not None:
            out[row, index] = 1.0
    return out


def robust_mean_std(values: np.ndarray) -> tuple[float, float]:
    """Population mean and std of finite float64 ``values``, safe for huge and tiny magnitudes.

    Squaring 1e200 overflows and squaring 1e-200 underflows to zero (which would make a
    varying column look constant), so outside a safe range the moments are computed on
    ``values / max|values|`` and scaled back; inside it they are numpy's, to the last bit.
    """
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak == 0.0:
        return 0.0, 0.0
    unit = 1.0 if SAFE_MAGNITUDE[0] < peak < SAFE_MAGNITUDE[1] else peak
    scaled = values / unit
    return float(np.mean(scaled)) * unit, float(np.std(scaled)) * unit


def _fit_numeric(table: RawTable, rows: np.ndarray, name: str, spec: DataSpec) -> NumericColumn:
    values = numbers(table, name, rows)
    present = values[~np.isnan(values)]
    fill = _fill_value(present, spec.missing, table, name) if present.size < values.size else None
    filled = values if fill is None else np.where(np.isnan(values), fill, values)
    if spec.scaling == "standard":
        shift, spread = robust_mean_std(filled)
    elif spec.scaling == "minmax":
        shift = float(filled.min()) if filled.size else 0.0
        spread = float(filled.max()) - shift if filled.size else 0.0
    else:
        shift, spread = 0.0, 1.0
    divisor = spread if spread > 0.0 and math.isfinite(spread) else 1.0  # a constant column stays put
    return NumericColumn(name, fill, shift, divisor)


def _fill_value(present: np.ndarray, policy: str, table: RawTable, name: str) -> float:
    """The imputation value for a column with missing training cells, learnt from the others."""
    if policy == "zero":
        return 0.0
    if policy not in ("mean", "median"):
        raise DataError(
            f"{table.source}: column {name!r} has missing values; set missing = drop | mean | median | zero"
        )
    if present.size == 0:
        raise DataError(f"{table.source}: column {name!r} has no value in any training row, so no {policy} to fill in")
    return robust_mean_std(present)[0] if policy == "mean" else float(np.median(present))


def _numeric_block(table: RawTable, rows: np.ndarray, column: NumericColumn) -> np.ndarray:
    values = numbers(table, column.name, rows)
    missing = np.isnan(values)
    if missing.any():
        if column.fill is None:
            row = int(rows[int(np.flatnonzero(missing)[0])])
            raise DataError(
                f"{table.where(row)}, column {column.name!r}: missing value, and the training rows had none "
                "to learn a fill from; set missing = zero or drop"
            )
        values = np.where(missing, column.fill, values)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by name
        out = ((values - column.shift) / column.divisor).astype(np.float32)
    if not np.isfinite(out).all():
        row = int(rows[int(np.flatnonzero(~np.isfinite(out))[0])])
        raise DataError(
            f"{table.where(row)}, column {column.name!r}: {table.column(column.name)[row]!r} does not fit in "
            "float32 once scaled; set scale = standard (or minmax) for this table"
        )
    return out


def _raise_first_non_number(table: RawTable, name: str, rows: np.ndarray, cells: np.ndarray) -> None:
    for position, cell in enumerate(cells):
        if is_missing(cell):
            continue
        try:
            ok = not isinstance(cell, (list, dict)) and math.isfinite(float(cell))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(
                f"{table.where(int(rows[position]))}, column {name!r}: {cell!r} is not a finite number; "
                f"if {name!r} holds categories, list it in categorical (--categorical {name}), "
                "otherwise fix the value"
            )
    raise DataError(f"{table.source}: column {name!r} is not numeric")
