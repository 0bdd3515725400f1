"""``fedloom agent --data KIND:PATH --model NAME``: a deployed site's trainer without Python of its own.

The site's data is loaded by the same :func:`fedloom.data.load_data` that
``fedloom sim --data`` uses, and the model is built by the same
:func:`fedloom.sim.builtin_trainer.trainer_maker`, seeded with ``--seed``, so the admin
agent's ``--upload-initial`` model is the simulation's initial model.

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

from fedloom.cli.data_flags import DATA_FLAGS, add_data_flags, data_options
from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.client.class_weights import ClassWeight
    from fedloom.client.trainer import Trainer
    from fedloom.data import DataSpec

__all__ = ["add_builtin_trainer_flags", "builtin_trainer_factory", "check_deployable", "trainer_factory"]

#: the flags that only the built-in trainer reads (refused beside --trainer)
BUILTIN_ONLY = (*DATA_FLAGS, "model", "seed", "device", "class_weight")


def add_builtin_trainer_flags(parser: argparse.ArgumentParser) -> None:
    """``--data`` and its description, ``--model``, ``--seed``, ``--device``, ``--class-weight``."""
    from fedloom.sim.config import MODELS

    add_data_flags(parser)
    group = parser.add_argument_group("the built-in model (with --data; the same on every site)")
    add = group.add_argument
    add("--model", choices=MODELS, help="the model every site trains (default logreg)")
    add("--seed", type=int, help="seed of the initial model and of the test split (default 0)")
    add("--device", help="torch device, e.g. cpu or cuda (default cpu)")
    add("--class-weight", help="loss class weights: none (default), balanced (from this site's labels), or w1,w2,...")


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
    from fedloom.client.class_weights import parse_class_weight
    from fedloom.data import parse_data_spec

    seed = 0 if args.seed is None else args.seed
    spec = parse_data_spec(args.data, **{"seed": seed, **data_options(args)})
    class_weight = parse_class_weight(args.class_weight or "none")
    model = args.model or "logreg"
    return builtin_trainer_factory(spec, model, seed=seed, device=args.device or "cpu", class_weight=class_weight)


def builtin_trainer_factory(
    spec: DataSpec, model: str, *, seed: int, device: str = "cpu", class_weight: ClassWeight = "none"
) -> Callable[[], Trainer]:
    """A zero-argument factory that loads the site's data and builds the built-in ``model`` on it."""
    check_deployable(spec)

    def make_trainer() -> Trainer:
        from fedloom.data import load_data
        from fedloom.sim.builtin_trainer import trainer_maker

        splits = load_data(spec).splits
        make = trainer_maker(
            model, splits.input_shape, splits.num_classes, seed=seed, device=device, class_weight=class_weight
        )
        test = splits.test.materialised() if len(splits.test) else None
        return make(splits.train.materialised(), test)

    make_trainer.__name__ = f"make_trainer[{model} on {spec.kind}:{spec.path}]"
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
