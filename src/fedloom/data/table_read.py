"""Reading a CSV or Parquet table into named columns of raw cell values.

No type is guessed here: every column is an object array of the cells as read (strings
for CSV; Python numbers, strings or booleans for Parquet), ``None`` where a cell is
missing. Deciding what is a number, a category or a label belongs to the preprocessing,
which knows the spec and can name the file, row and column of a bad value.

CSV goes through the standard library's reader (exact line numbers for error messages,
no dependency); Parquet needs pyarrow, the ``tables`` extra.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.extras import require

#: cell texts that mean "no value" in a CSV file (compared after stripping spaces)
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class RawTable:
    """Named columns of raw cells, and where each row came from (for error messages)."""

    source: str
    columns: Mapping[str, np.ndarray]
    #: the file line of each row (CSV), or ``None`` where rows have no lines (Parquet, Arrow)
    lines: np.ndarray | None = None

    def __len__(self) -> int:
        return 0 if not self.columns else len(next(iter(self.columns.values())))

    def where(self, row: int) -> str:
        """``"data.csv: row 3 (line 4)"``: 1-based data row, and the line where it has one."""
        place = f"{self.source}: row {row + 1}"
        return place if self.lines is None else f"{place} (line {int(self.lines[row])})"

    def column(self, name: str) -> np.ndarray:
        """One column's cells, or a DataError naming it and listing the columns present."""
        if name not in self.columns:
            present = ", ".join(repr(c) for c in self.columns)
            raise DataError(f"{self.source}: no column {name!r}; the columns present are {present}")
        return self.columns[name]


def is_missing(value: object) -> bool:
    """A cell with no value: ``None``, or a float NaN (how Parquet and Arrow may store one)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def missing_mask(cells: np.ndarray) -> np.ndarray:
    """:func:`is_missing` for every cell of an object array, as a bool array (one pass, no calls)."""
    return np.fromiter((cell is None or cell != cell for cell in cells), dtype=bool, count=len(cells))  # noqa: PLR0124 (NaN)


def read_table_file(path: str | Path) -> RawTable:
    """A CSV (``.csv``, ``.tsv``) or Parquet (``.parquet``, ``.pq``) file as a :class:`RawTable`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{file}: no such table file (fedloom reads local files only, never downloads)")
    suffix = file.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(file, CSV_SUFFIXES[suffix])
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(file)
    known = ", ".join([*CSV_SUFFIXES, *PARQUET_SUFFIXES])
    raise DataError(f"{file}: unknown table format {suffix!r}; name the file with one of {known}")


def columns_from_arrow(table: Any, source: str) -> RawTable:
    """A ``pyarrow.Table`` (from Parquet or a Hugging Face dataset) as a :class:`RawTable`."""
    names = [str(name) for name in table.column_names]
    _check_header(names, source)
    if table.num_rows == 0:
        raise DataError(f"{source}: the table has columns but no rows")
    columns = {}
    for name, column in zip(names, table.columns, strict=True):
        cells = np.empty(table.num_rows, dtype=object)
        cells[:] = column.to_pylist()
        columns[name] = cells
    return RawTable(source, columns)


def _read_csv(file: Path, delimiter: str) -> RawTable:
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{file}: the file is empty; a table needs a header row of column names")
            names = [name.strip() for name in header]
            _check_header(names, str(file))
            rows, lines = _csv_rows(reader, len(names), file)
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not UTF-8 text ({exc}); save the table as UTF-8 CSV") from exc
    except csv.Error as exc:
        raise DataError(f"{file}: malformed CSV ({exc})") from exc
    if not rows:
        raise DataError(f"{file}: the table has a header but no data rows")
    columns = {}
    for index, name in enumerate(names):
        cells = np.empty(len(rows), dtype=object)
        cells[:] = [_csv_cell(row[index]) for row in rows]
        columns[name] = cells
    return RawTable(str(file), columns, np.asarray(lines, dtype=np.int64))


def _csv_rows(reader: Any, width: int, file: Path) -> tuple[list[list[str]], list[int]]:
    """Every non-blank row with its line number; a row of the wrong width names its line."""
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not row or (width > 1 and len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        if len(row) != width:
            raise DataError(
                f"{file}: line {reader.line_num} has {len(row)} fields, the header has {width}; "
                "quote values that contain the delimiter"
            )
        rows.append(row)
        lines.append(reader.line_num)
    return rows, lines


def _csv_cell(text: str) -> str | None:
    stripped = text.strip()
    return None if stripped in MISSING_TOKENS else stripped


def _check_header(names: list[str], source: str) -> None:
    if any(not name for name in names):
        raise DataError(f"{source}: column {names.index('') + 1} of the header has no name")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{source}: the header names column {name!r} twice")
        seen.add(name)


def _read_parquet(file: Path) -> RawTable:
    require("pyarrow", "tables", "Parquet files")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{file}: not a readable Parquet file ({exc})") from exc
    return columns_from_arrow(table, str(file))
