"""The data description on the command line: the same flags for ``fedloom sim`` and ``fedloom agent``.

``--data KIND:PATH`` names a loader and a local path (``table:hospital.csv``,
``images:scans/``, ``hf:saved/``, ``arrays:data.npz``); the other flags are fields of
:class:`fedloom.data.spec.DataSpec`. Both commands read them through
:func:`data_options`, so a description that simulates is, flag for flag, the one a site
deploys (docs/data.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from fedloom.core.errors import ConfigError

__all__ = ["DATA_FLAGS", "MODEL_FLAGS", "add_data_flags", "add_model_flags", "data_options", "parse_image_size"]

#: argparse destinations of the data-description flags (beside ``data`` itself)
DATA_FLAGS = (
    "target",
    "features",
    "categorical",
    "categories",
    "classes",
    "missing",
    "scale",
    "image_size",
    "test_fraction",
    "test_path",
)


def add_data_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--data`` and the description flags (in a group, returned for a command's own additions)."""
    group = parser.add_argument_group("the data description (docs/data.md)")
    add = group.add_argument
    add("--data", metavar="KIND:PATH", help="a local dataset: table:F.csv|F.parquet, images:DIR, hf:DIR, arrays:F.npz")
    add("--target", metavar="COL", help="the label column of a table or Hugging Face dataset")
    add("--features", metavar="COL,COL", type=_columns, help="feature columns (default: all but --target and --by)")
    add("--categorical", metavar="COL,COL", type=_columns, help="columns to one-hot encode")
    add(
        "--categories",
        action="append",
        metavar="COL=L1,L2",
        help="the fixed levels of a categorical column, so every site encodes the same width; repeatable",
    )
    add(
        "--classes",
        metavar="L1,L2",
        type=_columns,
        help="the labels in class-id order (default: the sorted labels seen; fixed, every site numbers them alike)",
    )
    add("--missing", help="missing values: error (default), drop, mean, median, zero")
    add("--scale", help="feature scaling fitted on the training rows: standard (default), minmax, none")
    add("--image-size", metavar="HxW", help="images are resized to this size, e.g. 32x32")
    add("--test-fraction", type=float, metavar="F", help="share of the rows held out as the test split (seeded)")
    add("--test-path", metavar="PATH", help="a separate test file or folder instead of --test-fraction")
    return group


#: argparse destinations of the model flags: SimConfig fields, read alike by the sim and the agent
MODEL_FLAGS = ("model", "class_weight", "hidden", "model_dropout")


def add_model_flags(parser: argparse._ActionsContainer) -> None:
    """Add ``--model`` and its options (the SimConfig fields of :data:`MODEL_FLAGS`)."""
    from fedloom.sim.config import MODELS

    add = parser.add_argument
    add("--model", choices=MODELS, help="the model (default logreg); logreg and mlp-numpy need no PyTorch")
    add("--class-weight", help="loss weights for imbalanced labels: none (default), balanced, or one per class: 1,19")
    add("--hidden", help="hidden layer widths of mlp / mlp-numpy, e.g. 64,32 (default 200,200)")
    add("--model-dropout", type=float, help="torch mlp: dropout after each hidden layer (default 0: none)")


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The DataSpec fields the flags in ``args`` give (those left out keep the loader's defaults)."""
    options: dict[str, Any] = {}
    for name in DATA_FLAGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "categories":
            value = parse_levels(value)
        elif name == "image_size":
            value = parse_image_size(value)
        options[name] = value
    return options


def parse_levels(items: Sequence[str]) -> dict[str, list[str]]:
    """``["colour=red,green", "size=s,m,l"]`` -> ``{"colour": ["red", "green"], "size": ["s", "m", "l"]}``."""
    levels: dict[str, list[str]] = {}
    for item in items:
        column, sep, values = item.partition("=")
        column = column.strip()
        listed = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not column or not listed:
            raise ConfigError(f"--categories {item!r} must look like COLUMN=LEVEL,LEVEL (e.g. colour=red,green)")
        if column in levels:
            raise ConfigError(f"--categories names column {column!r} twice; list its levels once")
        levels[column] = listed
    return levels


def parse_image_size(text: str) -> tuple[int, int]:
    """``"32x28"`` -> ``(32, 28)`` (height, width); ``"32"`` -> ``(32, 32)``."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise ConfigError(f"--image-size {text!r} must be HEIGHTxWIDTH in pixels, e.g. 32x32")
    return sizes[0], sizes[1]


def _columns(text: str) -> list[str]:
    """A comma-separated list of names (column names, labels); empty names refused."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} must be names separated by commas, e.g. age,weight")
    return names
