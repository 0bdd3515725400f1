"""The built-in models as Trainers: one function for the simulation and for a deployed site.

``fedloom sim --model mlp`` and ``fedloom agent --data ... --model mlp`` must train the same
network from the same initial weights, or a simulation would say nothing about the
deployment it rehearses. Both therefore ask :func:`trainer_maker` for their trainers: it
seeds the initialisation (so the admin agent's ``--upload-initial`` model is the one the
simulation starts from, bit for bit) and builds one model per process that every trainer
it makes shares (the weights are loaded into it at the start of every fit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedloom.client.class_weights import ClassWeight
from fedloom.client.numpy_logreg import NumpyLogisticTrainer
from fedloom.client.numpy_mlp import DEFAULT_HIDDEN, NumpyMLPTrainer
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ConfigError
from fedloom.data import ArrayDataset
from fedloom.sim.config import MODELS, NUMPY_MODELS, SimConfig

__all__ = ["TrainerMaker", "trainer_maker", "trainer_maker_for"]

#: ``(local training data, local evaluation data or None) -> Trainer``
TrainerMaker = Callable[[ArrayDataset, ArrayDataset | None], Trainer]


def trainer_maker(
    model: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    seed: int,
    device: str = "cpu",
    class_weight: ClassWeight = "none",
    hidden: tuple[int, ...] | None = None,
    dropout: float = 0.0,
) -> TrainerMaker:
    """Trainers of the built-in ``model`` for samples of ``input_shape``, initialised from ``seed``.

    ``hidden`` (layer widths; None: the model's default) shapes ``mlp`` and ``mlp-numpy``,
    ``dropout`` the torch ``mlp``; ``class_weight`` weighs every trainer's loss.
    """
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
    if model in NUMPY_MODELS:
        return _numpy_maker(model, num_classes, seed, class_weight, hidden)
    options: dict[str, Any] = {"hidden": hidden, "dropout": dropout}
    return _torch_maker(model, input_shape, num_classes, seed, device, class_weight, options)


def trainer_maker_for(config: SimConfig, input_shape: tuple[int, ...], num_classes: int) -> TrainerMaker:
    """The trainers ``config``'s model settings ask for (model, hidden, model_dropout, class_weight, seed, device)."""
    return trainer_maker(
        config.model,
        input_shape,
        num_classes,
        seed=config.seed,
        device=config.device,
        class_weight=config.class_weight,
        hidden=config.hidden_sizes(),
        dropout=config.model_dropout,
    )


def _evaluation_arrays(evaluation: ArrayDataset | None) -> dict[str, Any]:
    return {} if evaluation is None else {"x_eval": evaluation.x, "y_eval": evaluation.y}


def _numpy_maker(
    model: str, num_classes: int, seed: int, class_weight: ClassWeight, hidden: tuple[int, ...] | None
) -> TrainerMaker:
    """``logreg`` (NumpyLogisticTrainer) or ``mlp-numpy`` (NumpyMLPTrainer, initialised from ``seed``)."""

    def make(data: ArrayDataset, evaluation: ArrayDataset | None) -> Trainer:
        extra = {"class_weight": class_weight, **_evaluation_arrays(evaluation)}
        if model == "mlp-numpy":
            layers = hidden or DEFAULT_HIDDEN
            return NumpyMLPTrainer(data.x, data.y, num_classes, hidden=layers, seed=seed, **extra)
        return NumpyLogisticTrainer(data.x, data.y, num_classes, **extra)

    return make


def _torch_maker(
    model: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    device: str,
    class_weight: ClassWeight,
    options: dict[str, Any],
) -> TrainerMaker:
    import torch

    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    torch.manual_seed(seed)
    module = build_model(model, input_shape, num_classes, **options)

    def make(data: ArrayDataset, evaluation: ArrayDataset | None) -> Trainer:
        extra = _evaluation_arrays(evaluation)
        return TorchTrainer(module, data.x, data.y, device=device, class_weight=class_weight, **extra)

    return make
