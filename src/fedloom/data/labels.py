"""Label values -> class ids, the same way for every loader.

Class ids follow the sorted distinct label values (numerically when every label is a
number, so ``2`` comes before ``10``), unless the spec fixes ``classes``: a federation
must agree on what id 3 means, and a site whose rows lack a class would otherwise
shift every id after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedloom.core.errors import DataError


def label_levels(labels: Sequence[str]) -> tuple[str, ...]:
    """The sorted distinct labels; numbers sort by value, anything else as text."""
    distinct = set(labels)
    values = {label: _as_number(label) for label in distinct}
    if all(value is not None for value in values.values()):
        return tuple(sorted(distinct, key=lambda label: (values[label], label)))
    return tuple(sorted(distinct))


def encode_labels(
    labels: Sequence[str], classes: tuple[str, ...], where: Callable[[int], str], column: str
) -> np.ndarray:
    """int64 class ids of ``labels``; a label outside ``classes`` names its row and the classes."""
    ids = {name: index for index, name in enumerate(classes)}
    out = np.empty(len(labels), dtype=np.int64)
    for row, label in enumerate(labels):
        index = ids.get(label)
        if index is None:
            raise DataError(
                f"{where(row)}, column {column!r}: label {label!r} is not one of the classes {list(classes)}; "
                "add it to classes or fix the row"
            )
        out[row] = index
    return out


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
