"""The data description shared by ``fedloom sim --data`` and ``fedloom agent --data``.

A :class:`DataSpec` says *where* a site's data lies and *how* to turn it into the float32
features / int64 labels every trainer consumes. Simulation and deployment read the same
description (a ``kind:path`` string plus options, or a TOML ``[data]`` table), so a model
designed in simulation meets the same feature layout on every deployed site, with no
Python written by the site.

Every field is validated when the spec is built: a typo in a config is refused by name
before any file is opened, rather than surfacing as an odd shape ten minutes later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from fedloom.core.errors import ConfigError

#: the loader kinds, as written before the colon of ``kind:path``
DATA_KINDS = ("images", "table", "hf", "arrays")
#: what to do with a missing value in a used column
MISSING_POLICIES = ("error", "drop", "mean", "median", "zero")
#: how numeric features (or pixels) are scaled, fitted on the training rows only
SCALINGS = ("standard", "minmax", "none")
#: the kind's scaling when ``scale`` is not given: user arrays are taken as they come
DEFAULT_SCALE = {"images": "standard", "table": "standard", "hf": "standard", "arrays": "none"}
#: the share of rows held out as the test split when no test file is given
DEFAULT_TEST_FRACTION = 0.2
#: the fields that only some kinds read; setting one for another kind is refused
_ONLY_FOR = {
    "target": ("table", "hf"),
    "features": ("table", "hf"),
    "categorical": ("table", "hf"),
    "categories": ("table", "hf"),
    "missing": ("table", "hf"),
    "image_size": ("images", "hf"),
    "grayscale": ("images", "hf"),
    "by": ("table", "hf", "arrays"),
    "test_path": ("table", "images", "hf"),
}


@dataclass(frozen=True)
class DataSpec:
    """Where a dataset lies and how to load it (see :func:`fedloom.data.load_data`).

    ``kind``/``path``: the loader and its local file or folder (never a URL: nothing is
    downloaded at run time). ``target``: the label column of a table or HF dataset.
    ``features``: the input columns (default: every column but ``target`` and ``by``).
    ``categorical``: columns to one-hot encode; a non-numeric column not listed here is an
    error, never silently encoded. ``categories``: fixed levels per categorical column, so
    that every deployed site builds the same feature width (default: the sorted levels of
    the training rows; an unseen level encodes as all zeros). ``classes``: fixed label
    names in class-id order, for the same reason (default: the sorted distinct labels).
    ``missing``: ``error`` | ``drop`` (the row) | ``mean`` | ``median`` | ``zero``.
    ``scale``: ``standard`` | ``minmax`` | ``none`` (default per kind, see
    :data:`DEFAULT_SCALE`). ``image_size``: ``(H, W)`` to resize to (default: the images'
    own size, which must then be the same for all). ``test_path``: a held-out test file or
    folder; otherwise ``test_fraction`` of the rows, stratified by label and seeded by
    ``seed``. ``by``: the natural-partition column, returned per training row as
    :attr:`LoadedData.groups` and never used as a feature.
    """

    kind: str
    path: str
    target: str | None = None
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    classes: tuple[str, ...] | None = None
    missing: str = "error"
    scale: str | None = None
    image_size: tuple[int, int] | None = None
    grayscale: bool = False
    test_fraction: float = DEFAULT_TEST_FRACTION
    test_path: str | None = None
    by: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if not isinstance(self.path, str):
            object.__setattr__(self, "path", _text("path", self.path))
        for name in ("target", "test_path", "by"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _text(name, value))
        object.__setattr__(self, "features", _optional_names("features", self.features))
        object.__setattr__(self, "categorical", _names("categorical", self.categorical))
        object.__setattr__(self, "classes", _optional_names("classes", self.classes))
        object.__setattr__(self, "categories", _categories(self.categories, self.categorical))
        object.__setattr__(self, "image_size", _image_size(self.image_size))
        _check_choices(self)
        _check_numbers(self)
        _check_columns(self)
        _check_applicable(self)

    @property
    def scaling(self) -> str:
        """The scaling in force: ``scale``, or the kind's default."""
        return self.scale if self.scale is not None else DEFAULT_SCALE[self.kind]

    def to_mapping(self) -> dict[str, Any]:
        """The spec as plain TOML/JSON data: only the fields that differ from the defaults."""
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        for spec_field in fields(self)[2:]:
            value = getattr(self, spec_field.name)
            default = spec_field.default_factory() if callable(spec_field.default_factory) else spec_field.default
            if value == default:
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = {name: list(levels) for name, levels in value.items()}
            out[spec_field.name] = value
        return out

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> DataSpec:
        """A spec from a TOML ``[data]`` table or a sim config; unknown keys are refused by name.

        ``kind`` and ``path`` may be given separately, or together as ``data = "kind:path"``.
        """
        values = dict(mapping)
        if "data" in values:
            text = _text("data", values.pop("data"))
            for name, value in zip(("kind", "path"), split_kind_path(text), strict=True):
                if values.setdefault(name, value) != value:
                    raise ConfigError(f"data = {text!r} and {name} = {values[name]!r} disagree; give one of them")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown data option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")
        for required in ("kind", "path"):
            if required not in values:
                raise ConfigError(f"the data description needs {required!r} (or data = 'KIND:PATH')")
        return cls(**values)


def parse_data_spec(text: str, **options: Any) -> DataSpec:
    """``"table:hospital.csv"`` plus options -> :class:`DataSpec` (the ``--data`` argument)."""
    kind, path = split_kind_path(text)
    return DataSpec.from_mapping({"kind": kind, "path": path, **options})


def split_kind_path(text: str) -> tuple[str, str]:
    """``"kind:path"`` -> ``(kind, path)``; an absent or unknown kind names the valid ones."""
    kind, sep, path = text.partition(":")
    if not sep or not path:
        raise ConfigError(f"data {text!r} must be KIND:PATH with KIND one of {', '.join(DATA_KINDS)}")
    _check_kind(kind)
    return kind, path


def _check_kind(kind: object) -> None:
    if kind not in DATA_KINDS:
        raise ConfigError(f"unknown data kind {kind!r}; valid kinds: {', '.join(DATA_KINDS)}")


def _text(name: str, value: object) -> str:
    """A non-empty string option; paths may come in as :class:`os.PathLike`."""
    if hasattr(value, "__fspath__"):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"data option {name} must be a non-empty string, got {value!r}")
    return value


def _names(name: str, value: object) -> tuple[str, ...]:
    """A list of distinct column names as a tuple (a bare string is refused: it is one name)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"data option {name} must be a list of names, got {value!r}")
    names = tuple(_text(name, item) for item in value)
    if len(set(names)) != len(names):
        raise ConfigError(f"data option {name} lists a name twice: {list(names)}")
    return names


def _optional_names(name: str, value: object) -> tuple[str, ...] | None:
    return None if value is None else _names(name, value)


def _categories(value: object, categorical: tuple[str, ...]) -> Mapping[str, tuple[str, ...]]:
    """Fixed levels per categorical column, read-only; each column must be in ``categorical``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"data option categories must map a column to its levels, got {value!r}")
    levels = {_text("categories", column): _names(f"categories[{column!r}]", v) for column, v in value.items()}
    stray = sorted(set(levels) - set(categorical))
    if stray:
        raise ConfigError(f"categories given for {', '.join(stray)}, which categorical does not list; add them there")
    return MappingProxyType(levels)


def _image_size(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ConfigError(f"data option image_size must be [HEIGHT, WIDTH] in positive pixels, got {value!r}")


def _check_choices(spec: DataSpec) -> None:
    if spec.missing not in MISSING_POLICIES:
        raise ConfigError(f"data option missing={spec.missing!r}; valid: {', '.join(MISSING_POLICIES)}")
    if spec.scale is not None and spec.scale not in SCALINGS:
        raise ConfigError(f"data option scale={spec.scale!r}; valid: {', '.join(SCALINGS)}")
    if not isinstance(spec.grayscale, bool):
        raise ConfigError(f"data option grayscale must be true or false, got {spec.grayscale!r}")


def _check_numbers(spec: DataSpec) -> None:
    fraction = spec.test_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        raise ConfigError(f"data option test_fraction must be a number in [0, 1), got {fraction!r}")
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data option test_fraction must lie in [0, 1), got {fraction}")
    if spec.test_path is not None and fraction != DEFAULT_TEST_FRACTION:
        raise ConfigError("give test_path or test_fraction, not both: with a test file no rows are held out")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or spec.seed < 0:
        raise ConfigError(f"data option seed must be a non-negative integer, got {spec.seed!r}")


def _check_columns(spec: DataSpec) -> None:
    """``target`` and ``by`` are never features; every categorical column is one."""
    if spec.kind == "table" and spec.target is None:
        raise ConfigError("a table needs target: the label column (--target COLUMN or target = 'COLUMN')")
    for role in ("target", "by"):
        column = getattr(spec, role)
        if column is not None and spec.features is not None and column in spec.features:
            raise ConfigError(f"features lists {column!r}, the {role} column; remove it from features")
        if column is not None and column in spec.categorical:
            raise ConfigError(f"categorical lists {column!r}, the {role} column; remove it from categorical")
    if spec.target is not None and spec.target == spec.by:
        raise ConfigError(f"target and by are the same column {spec.target!r}; by must be a separate column")
    if spec.features is not None:
        stray = [c for c in spec.categorical if c not in spec.features]
        if stray:
            raise ConfigError(f"categorical lists {', '.join(stray)}, which features does not; add them to features")


def _check_applicable(spec: DataSpec) -> None:
    """An option the kind does not read is refused, rather than silently ignored."""
    for name, kinds in _ONLY_FOR.items():
        spec_field = next(f for f in fields(spec) if f.name == name)
        default = spec_field.default_factory() if callable(spec_field.default_factory) else spec_field.default
        if spec.kind not in kinds and getattr(spec, name) != default:
            raise ConfigError(f"data option {name} does not apply to kind {spec.kind!r} (only to {', '.join(kinds)})")
