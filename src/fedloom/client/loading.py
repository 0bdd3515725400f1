"""Find the site's Trainer from a ``module:factory`` string, as ``fedloom agent --trainer`` does.

The factory is the site's own code: it loads the site's private data and returns a
:class:`~fedloom.client.trainer.Trainer`. It takes no arguments, or keyword arguments
given on the command line as ``--trainer-arg key=value`` (always strings; the factory
converts them). Two spellings are accepted:

* ``my_package.my_module:make_trainer`` -- an importable module (the current directory
  is searched too, as ``python -m`` would);
* ``path/to/site.py:make_trainer`` -- a file, imported under a private module name with
  its folder on ``sys.path`` so it can import its neighbours.

Every way this can go wrong ends in a :class:`~fedloom.core.errors.ConfigError` that
names the spec and the problem, before the agent talks to any server.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from fedloom.client.trainer import Trainer
from fedloom.core.errors import ConfigError

__all__ = ["TRAINER_METHODS", "check_trainer", "load_trainer_factory", "parse_trainer_args"]

#: what an object needs to be used as a Trainer
TRAINER_METHODS = ("get_weights", "fit", "evaluate")


def parse_trainer_args(items: Sequence[str]) -> dict[str, str]:
    """``["site=1", "sites=3"]`` -> ``{"site": "1", "sites": "3"}``; a repeated key is an error."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--trainer-arg {item!r} must look like key=value, with key a Python identifier")
        if key in parsed:
            raise ConfigError(f"--trainer-arg {key!r} is given twice")
        parsed[key] = value
    return parsed


def load_trainer_factory(spec: str, trainer_args: Mapping[str, str] | None = None) -> Callable[[], Trainer]:
    """Import ``spec`` (``module:attr`` or ``file.py:attr``) and return a zero-argument trainer factory.

    The returned callable calls the user's factory with ``trainer_args`` as keyword
    arguments and checks that the result is a Trainer. Whether the factory accepts those
    arguments is checked now, so a typo fails before any data is loaded.
    """
    target, attr = _split_spec(spec)
    module = _import_file(target, spec) if _is_file_spec(target) else _import_module(target, spec)
    factory = _resolve(module, attr, spec)
    if not callable(factory):
        raise ConfigError(f"trainer {spec!r}: {attr!r} is a {type(factory).__name__}, not a callable factory")
    kwargs = dict(trainer_args or {})
    _check_signature(factory, kwargs, spec)

    def make_trainer() -> Trainer:
        return check_trainer(factory(**kwargs), spec)

    make_trainer.__name__ = f"make_trainer[{spec}]"
    return make_trainer


def check_trainer(obj: object, origin: str = "the trainer factory") -> Trainer:
    """Return ``obj`` if it has callable ``get_weights``, ``fit`` and ``evaluate``; else say what it lacks."""
    missing = [name for name in TRAINER_METHODS if not callable(getattr(obj, name, None))]
    if missing:
        raise ConfigError(
            f"{origin} returned a {type(obj).__name__}, which is not a Trainer: it lacks {', '.join(missing)} "
            f"(a Trainer needs methods {', '.join(TRAINER_METHODS)})"
        )
    return obj  # type: ignore[return-value]


# --------------------------------------------------------------------- helpers


def _split_spec(spec: str) -> tuple[str, str]:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"trainer {spec!r} must look like 'module:factory' or 'path/to/file.py:factory'")
    return target, attr


def _is_file_spec(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _import_module(name: str, spec: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m`: the site's module usually sits in the working directory
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(
                f"trainer {spec!r}: no module named {name!r} (run from its folder, add it to PYTHONPATH, "
                "or give a file path like path/to/site.py:factory)"
            ) from None
        raise ConfigError(f"trainer {spec!r}: importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"trainer {spec!r}: importing {name!r} raised {type(exc).__name__}: {exc}") from exc


def _import_file(target: str, spec: str) -> ModuleType:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"trainer {spec!r}: file {target!r} does not exist")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_name = f"_fedloom_trainer_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise ConfigError(f"trainer {spec!r}: {target!r} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(import_spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its neighbours, as `python file.py` allows
    sys.modules[module_name] = module  # dataclasses and typing look the module up while it executes
    try:
        import_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"trainer {spec!r}: importing {target!r} raised {type(exc).__name__}: {exc}") from exc
    return module


def _resolve(module: ModuleType, attr: str, spec: str) -> Any:
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            where = getattr(module, "__file__", None) or module.__name__
            raise ConfigError(f"trainer {spec!r}: {where} has no attribute {attr!r}")
        value = getattr(value, part)
    return value


def _check_signature(factory: Callable[..., Any], kwargs: Mapping[str, str], spec: str) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have none: let the call itself decide
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        given = ", ".join(f"{k}=" for k in kwargs) or "no arguments"
        raise ConfigError(
            f"trainer {spec!r}: the factory{signature} cannot be called with {given} ({exc}); "
            "pass its parameters with --trainer-arg key=value"
        ) from None
