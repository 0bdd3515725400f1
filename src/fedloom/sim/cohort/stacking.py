"""A cohort's per-client weights as stacked tensors (a leading client dimension), and back.

``torch.func.functional_call`` + ``vmap`` need every parameter and buffer of the cohort
as one tensor ``(clients, *shape)``. Trainable parameters are differentiated; buffers
and frozen parameters (``requires_grad=False``, never stepped by TorchTrainer either)
travel beside them undifferentiated, so BatchNorm's running statistics stay per client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedloom.core.weights import Weights, check_compatible

Tensors = dict[str, torch.Tensor]


@dataclass
class StackedWeights:
    """The cohort's tensors: ``params`` are stepped by the optimiser, ``fixed`` are not."""

    params: Tensors
    fixed: Tensors
    names: list[str]  # the state_dict order, which the results keep

    @property
    def clients(self) -> int:
        return int(next(iter({**self.params, **self.fixed}.values())).shape[0])


def trainable_names(model: nn.Module) -> list[str]:
    """The parameters an optimiser steps: those that require a gradient."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def stack_weights(model: nn.Module, weights: Sequence[Weights], device: torch.device) -> StackedWeights:
    """Each client's NumPy weights checked against the model (names, shapes, dtypes) and stacked."""
    template = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    for client in weights:
        check_compatible(client, template)
    trainable = set(trainable_names(model))
    params: Tensors = {}
    fixed: Tensors = {}
    for name, like in template.items():
        stacked = np.stack([np.asarray(client[name], dtype=like.dtype) for client in weights])
        tensor = torch.from_numpy(stacked).to(device)
        (params if name in trainable else fixed)[name] = tensor
    return StackedWeights(params, fixed, list(template))


def unstack_weights(stacked: StackedWeights) -> list[Weights]:
    """One NumPy Weights per client, in the state_dict's order (copies, on CPU)."""
    host = {k: v.detach().cpu().numpy() for k, v in {**stacked.params, **stacked.fixed}.items()}
    # np.array, not .copy(): a 0-d slice (num_batches_tracked) must stay an array, not a NumPy scalar
    return [{name: np.array(host[name][c], copy=True) for name in stacked.names} for c in range(stacked.clients)]


def per_client(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-client vector ``(clients,)`` shaped to broadcast against ``like`` ``(clients, *shape)``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))
