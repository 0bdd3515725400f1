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

from fedloom.client.numpy_logreg import NumpyLogisticTrainer
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ConfigError
from fedloom.data import ArrayDataset

__all__ = ["NUMPY_MODELS", "TrainerMaker", "trainer_maker"]

#: ``(local training data, local evaluation data or None) -> Trainer``
TrainerMaker = Callable[[ArrayDataset, ArrayDataset | None], Trainer]
#: the models that need no PyTorch
NUMPY_MODELS = ("logreg",)


def trainer_maker(
    model: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int, device: str = "cpu"
) -> TrainerMaker:
    """Trainers of the built-in ``model`` for samples of ``input_shape``, initialised from ``seed``."""
    if model in NUMPY_MODELS:
        return _numpy_maker(num_classes)
    from fedloom.models import TORCH_MODELS

    if model not in TORCH_MODELS:
        raise ConfigError(f"model must be one of {', '.join((*NUMPY_MODELS, *TORCH_MODELS))}; got {model!r}")
    return _torch_maker(model, input_shape, num_classes, seed, device)


def _evaluation_arrays(evaluation: ArrayDataset | None) -> dict[str, Any]:
    return {} if evaluation is None else {"x_eval": evaluation.x, "y_eval": evaluation.y}


def _numpy_maker(num_classes: int) -> TrainerMaker:
    def make(data: ArrayDataset, evaluation: ArrayDataset | None) -> Trainer:
        return NumpyLogisticTrainer(data.x, data.y, num_classes, **_evaluation_arrays(evaluation))

    return make


def _torch_maker(model: str, input_shape: tuple[int, ...], num_classes: int, seed: int, device: str) -> TrainerMaker:
    import torch

    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    torch.manual_seed(seed)
    module = build_model(model, input_shape, num_classes)

    def make(data: ArrayDataset, evaluation: ArrayDataset | None) -> Trainer:
        return TorchTrainer(module, data.x, data.y, device=device, **_evaluation_arrays(evaluation))

    return make
