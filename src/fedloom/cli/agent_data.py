"""``fedloom agent --data KIND:PATH --model NAME``: a deployed site's trainer without Python of its own.

The site's data is loaded by the same :func:`fedloom.data.load_data` that
``fedloom sim --data`` uses; the model flags (``--model``, ``--hidden``,
``--model-dropout``, ``--class-weight``, ``--seed``) are the simulation's SimConfig fields
and the model is built by the same :func:`fedloom.sim.builtin_trainer.trainer_maker_for`,
seeded with ``--seed``, so the admin agent's ``--upload-initial`` model is the
simulation's initial model.

A simulation encodes one table; a federation encodes one per site, and the widths must
agree or no model fits every site. Two things a site cannot know from its own rows are
therefore demanded on the command line, and refused (before any server is contacted)
when missing:

* ``--classes``: every label value of the federation, in order, so that class id k means
  the same at every site (a site that never saw a class would otherwise number the others
  differently, or build a narrower output layer);
* ``--categories COL=...`` for every ``--categorical`` column, so that every site one-hot
  encodes the same levels in the same order (a level a site never saw is a zero column).

Scaling and imputation are fitted on each site's own training rows: no statistic of one
site's data reaches another.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedloom.cli.data_flags import DATA_FLAGS, MODEL_FLAGS, add_data_flags, add_model_flags, data_options
from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.client.trainer import Trainer
    from fedloom.data import DataSpec
    from fedloom.sim.config import SimConfig

__all__ = ["add_builtin_trainer_flags", "builtin_trainer_factory", "check_deployable", "trainer_factory"]

#: the flags that only the built-in trainer reads (refused beside --trainer)
BUILTIN_ONLY = (*DATA_FLAGS, *MODEL_FLAGS, "seed", "device")


def add_builtin_trainer_flags(parser: argparse.ArgumentParser) -> None:
    """``--data`` and its description; ``--model`` and its options, ``--seed``, ``--device`` as ``fedloom sim``."""
    add_data_flags(parser)
    group = parser.add_argument_group("the built-in model (with --data; the same on every site and in fedloom sim)")
    add_model_flags(group)
    group.add_argument("--seed", type=int, help="seed of the initial model and of the test split (default 0)")
    group.add_argument("--device", help="torch device, e.g. cpu or cuda (default cpu)")


def trainer_factory(args: argparse.Namespace) -> Callable[[], Trainer]:
    """The site's trainer factory: its own (``--trainer``) or the built-in one (``--data``), never both."""
    if (args.trainer is None) == (args.data is None):
        given = "both" if args.trainer is not None else "neither"
        raise ConfigError(
            "fedloom agent needs --trainer SPEC (the site's own factory) or --data KIND:PATH"
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
    from fedloom.data import parse_data_spec
    from fedloom.sim.config import config_from_mapping

    # the model settings are the simulation's own fields, checked by the same code with the same messages
    settings = config_from_mapping({name: getattr(args, name) for name in (*MODEL_FLAGS, "seed", "device")})
    spec = parse_data_spec(args.data, **{"seed": settings.seed, **data_options(args)})
    return builtin_trainer_factory(spec, settings)


def builtin_trainer_factory(spec: DataSpec, settings: SimConfig) -> Callable[[], Trainer]:
    """A zero-argument factory that loads the site's data and builds ``settings``' model on it."""
    check_deployable(spec)

    def make_trainer() -> Trainer:
        from fedloom.data import load_data
        from fedloom.sim.builtin_trainer import trainer_maker_for

        splits = load_data(spec).splits
        make = trainer_maker_for(settings, splits.input_shape, splits.num_classes)
        test = splits.test.materialised() if len(splits.test) else None
        return make(splits.train.materialised(), test)

    make_trainer.__name__ = f"make_trainer[{settings.model} on {spec.kind}:{spec.path}]"
    return make_trainer


def check_deployable(spec: DataSpec) -> None:
    """Refuse a description whose encoding could differ between sites (see the module docstring)."""
    if not spec.classes:
        label = f"column {spec.target!r}" if spec.target else "the labels"
        raise ConfigError(
            f"--classes is needed with --data in deployment: list every value of {label} across all sites,"
            " in the same order on every site (e.g. --classes no,yes), so that class ids agree between sites"
        )
    unfixed = [column for column in spec.categorical if column not in spec.categories]
    if unfixed:
        example = " ".join(f"--categories {column}=LEVEL,LEVEL" for column in unfixed)
        raise ConfigError(
            f"categorical column(s) {', '.join(unfixed)} have no fixed levels: each site sees only its own levels,"
            f" so its one-hot width would differ from its neighbours'; list them on every site: {example}"
        )
