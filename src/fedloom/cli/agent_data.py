"""``fedloom agent --data KIND:PATH --model NAME``: a deployed site's trainer without Python of its own.

The site's data is loaded by the same :func:`fedloom.data.spec.load_data` that
``fedloom sim --data`` uses, and the model is built by the same
:func:`fedloom.sim.builtin_trainer.trainer_maker`, seeded with ``--seed``, so the admin
agent's ``--upload-initial`` model is the simulation's initial model.

A simulation encodes one table; a federation encodes one per site, and the widths must
agree or no model fits every site. Two things a site cannot know from its own rows are
therefore demanded on the command line, and refused (before any server is contacted)
when missing:

* ``--classes``: every label value of the federation, in order, so that class id k means
  the same at every site (a site that never saw a class would otherwise number the others
  differently);
* ``--categories COL=...`` for every ``--categorical`` column, so that every site one-hot
  encodes the same levels in the same order (a level a site never saw is a zero column).

Scaling and imputation are fitted on each site's own training rows: no statistic of one
site's data reaches another.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedloom.cli.data_flags import DATA_FLAGS, add_data_flags, data_options
from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.client.trainer import Trainer
    from fedloom.data import ArrayDataset, DatasetSplits
    from fedloom.data.spec import DataSpec

__all__ = ["add_builtin_trainer_flags", "builtin_trainer_factory", "check_deployable", "relabel", "trainer_factory"]

#: the flags that only the built-in trainer reads (refused beside --trainer)
BUILTIN_ONLY = (*DATA_FLAGS, "classes", "model", "seed", "device")


def add_builtin_trainer_flags(parser: argparse.ArgumentParser) -> None:
    """``--data`` and its description, ``--classes``, ``--model``, ``--seed``, ``--device``."""
    from fedloom.sim.config import MODELS

    add_data_flags(parser)
    group = parser.add_argument_group("the built-in model (with --data)")
    add = group.add_argument
    add("--classes", metavar="L1,L2", help="every label of the federation, in order (the same on every site)")
    add("--model", choices=MODELS, help="the model every site trains (default logreg; the same on every site)")
    add("--seed", type=int, help="seed of the initial model and the test split (default 0; the same on every site)")
    add("--device", help="torch device, e.g. cpu or cuda (default cpu)")


def trainer_factory(args: argparse.Namespace) -> Callable[[], Trainer]:
    """The site's trainer factory: its own (``--trainer``) or the built-in one (``--data``), never both."""
    if (args.trainer is None) == (args.data is None):
        given = "both" if args.trainer is not None else "neither"
        raise ConfigError(
            f"fedloom agent needs --trainer SPEC (the site's own factory) or --data KIND:PATH"
            f" (a built-in loader and model), not {given}"
        )
    if args.trainer is not None:
        stray = [name for name in BUILTIN_ONLY if getattr(args, name, None) is not None]
        if stray:
            flags = ", ".join("--" + name.replace("_", "-") for name in stray)
            raise ConfigError(f"{flags}: only the built-in trainer (--data) reads these; drop them with --trainer")
        from fedloom.client.loading import load_trainer_factory, parse_trainer_args

        return load_trainer_factory(args.trainer, parse_trainer_args(args.trainer_arg))
    if args.trainer_arg:
        raise ConfigError("--trainer-arg goes to a --trainer factory; the built-in trainer (--data) takes none")
    from fedloom.data.spec import parse_data_spec

    seed = 0 if args.seed is None else args.seed
    spec = parse_data_spec(args.data, **{"seed": seed, **data_options(args)})
    classes = _split_classes(args.classes)
    return builtin_trainer_factory(spec, classes, args.model or "logreg", seed=seed, device=args.device or "cpu")


def builtin_trainer_factory(
    spec: DataSpec, classes: Sequence[str] | None, model: str, *, seed: int, device: str = "cpu"
) -> Callable[[], Trainer]:
    """A zero-argument factory that loads the site's data and builds the built-in ``model`` on it."""
    check_deployable(spec, classes)
    assert classes is not None  # check_deployable refuses None

    def make_trainer() -> Trainer:
        from fedloom.data.spec import load_data
        from fedloom.sim.builtin_trainer import trainer_maker

        loaded = load_data(spec)
        splits = relabel(loaded.splits, loaded.class_names, classes, spec.target)
        make = trainer_maker(model, splits.input_shape, splits.num_classes, seed=seed, device=device)
        test = splits.test.materialised() if len(splits.test) else None
        return make(splits.train.materialised(), test)

    make_trainer.__name__ = f"make_trainer[{model} on {spec.kind}:{spec.path}]"
    return make_trainer


def check_deployable(spec: DataSpec, classes: Sequence[str] | None) -> None:
    """Refuse a description whose encoding could differ between sites (see the module docstring)."""
    if not classes:
        label = f"column {spec.target!r}" if spec.target else "the labels"
        raise ConfigError(
            f"--classes is needed with --data in deployment: list every value of {label} across all sites,"
            " in the same order on every site (e.g. --classes no,yes), so class ids agree between sites"
        )
    if len(set(classes)) != len(classes):
        raise ConfigError(f"--classes lists a label twice: {','.join(classes)}")
    fixed = dict(spec.categories or {})
    unfixed = [column for column in spec.categorical or () if column not in fixed]
    if unfixed:
        example = " ".join(f"--categories {column}=LEVEL,LEVEL" for column in unfixed)
        raise ConfigError(
            f"categorical column(s) {', '.join(unfixed)} have no fixed levels: each site sees only its own levels,"
            f" so its one-hot width would differ from its neighbours'; list them on every site: {example}"
        )


def relabel(
    splits: DatasetSplits, local: Sequence[str], classes: Sequence[str], target: str | None = None
) -> DatasetSplits:
    """``splits`` with labels renumbered from the site's own ``local`` class names to the federation's ``classes``."""
    unknown = [name for name in local if name not in classes]
    if unknown:
        where = f" in column {target!r}" if target else ""
        raise ConfigError(
            f"this site's data has label(s) {', '.join(map(repr, unknown))}{where} that --classes"
            f" ({','.join(classes)}) does not list; add them to --classes on every site"
        )
    mapping = np.array([list(classes).index(name) for name in local], dtype=np.int64)

    def renumbered(part: ArrayDataset) -> ArrayDataset:
        y = mapping[part.y] if len(part) else part.y
        return dataclasses.replace(part, y=y, num_classes=len(classes))

    return dataclasses.replace(splits, train=renumbered(splits.train), test=renumbered(splits.test))


def _split_classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]
