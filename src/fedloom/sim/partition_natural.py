"""Natural partitions: one client per site, user or writer, as the data itself records it.

Real federations are not drawn at random: a hospital's records stay at that hospital,
a user's messages on that user's phone. When a dataset carries such a column (FEMNIST's
writer, a clinical table's site), the faithful simulation gives each distinct value its
own client. The split needs no seed (the data decides it); clients are ordered by the
sorted group value so that client ``k`` means the same group in every run, and
:func:`natural_names` says which group each client is, for tables and run records.
"""

from __future__ import annotations

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.sim.partition_checks import check_count, sorted_parts, split_by_owner

#: what a group array may hold: integers or text (site names, user ids).
GROUP_KINDS = "iuUSO"


def natural(groups: np.ndarray, num_clients: int | None = None) -> list[np.ndarray]:
    """Client ``k`` holds exactly the rows whose group is the ``k``-th smallest distinct value.

    ``num_clients`` may be omitted; when given it must equal the number of distinct
    groups, so that a configured client count can never silently merge or drop groups.
    """
    values, owner = _distinct(groups)
    if num_clients is not None:
        check_count("num_clients", num_clients, 1)
        if num_clients != values.size:
            raise ConfigError(
                f"natural partition: the group column has {values.size} distinct values, so it makes "
                f"{values.size} clients, but num_clients={num_clients}; set num_clients to {values.size} or omit it"
            )
    return sorted_parts(split_by_owner(owner, values.size))


def natural_names(groups: np.ndarray) -> list[str]:
    """The group each client of :func:`natural` holds, as text: ``natural_names(g)[k]`` is client ``k``'s."""
    values, _ = _distinct(groups)
    return [str(v) for v in values.tolist()]


def _distinct(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct group values and, for every row, the position of its value among them."""
    g = _check_groups(groups)
    values, owner = np.unique(g, return_inverse=True)
    return values, np.asarray(owner, dtype=np.int64).reshape(-1)


def _check_groups(groups: np.ndarray) -> np.ndarray:
    """A non-empty 1-D array of integers or strings, none missing (object arrays must be all one kind)."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise ConfigError(f"groups must be a non-empty 1-D array (one group value per sample), got shape {g.shape}")
    if g.dtype.kind not in GROUP_KINDS:
        raise ConfigError(
            f"groups must hold integers or strings (a site or user id), got dtype {g.dtype}; "
            "convert the column, e.g. groups.astype(int) or groups.astype(str)"
        )
    if g.dtype.kind == "O":
        g = _object_groups(g)
    if g.dtype.kind == "S":  # bytes (e.g. read from HDF5): their text, so names read "site-1", not "b'site-1'"
        try:
            g = np.char.decode(g, "utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"groups: byte strings must be UTF-8 text ({exc}); decode the column first") from None
    if g.dtype.kind in "US" and np.any(np.char.str_len(g) == 0):
        row = int(np.flatnonzero(np.char.str_len(g) == 0)[0])
        raise ConfigError(f"groups: row {row} has an empty group value; give every sample its site or user id")
    return g


def _object_groups(g: np.ndarray) -> np.ndarray:
    """An object column as a str or int64 array; mixed kinds or missing values (None, NaN) are refused."""
    kinds = {type(v) for v in g.tolist()}
    if all(issubclass(k, str) for k in kinds):
        return g.astype(str)
    if all(issubclass(k, int | np.integer) and not issubclass(k, bool | np.bool_) for k in kinds):
        return g.astype(np.int64)
    rows = g.tolist()
    odd = [i for i, v in enumerate(rows) if isinstance(v, bool) or not isinstance(v, str | int | np.integer)]
    bad = odd[0] if odd else next(i for i, v in enumerate(rows) if type(v) is not type(rows[0]))
    raise ConfigError(
        f"groups must be all strings or all integers; row {bad} holds {rows[bad]!r} "
        f"(types found: {', '.join(sorted(k.__name__ for k in kinds))}); fill missing ids and convert the column"
    )
