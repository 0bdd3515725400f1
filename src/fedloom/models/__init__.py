"""fedloom.models — small PyTorch reference models for simulations, tests and benchmarks.

PyTorch is an optional extra, so it is imported only when a model is built: importing
``fedloom.models`` (e.g. to list :data:`TORCH_MODELS` in the CLI) works without it.
Every model is an ``nn.Sequential``, so its ``state_dict`` keys are short and stable
(``0.weight``, ``3.bias``...), which is what goes over the wire as fedloom ``Weights``.
"""

from __future__ import annotations

from fedloom.models.torch_models import TORCH_MODELS, build_model, cifar_cnn, cnn, logistic_regression, mlp

__all__ = ["TORCH_MODELS", "build_model", "cifar_cnn", "cnn", "logistic_regression", "mlp"]
