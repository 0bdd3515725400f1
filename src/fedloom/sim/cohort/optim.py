"""SGD (momentum, weight decay) and Adam applied per client on stacked tensors.

The update equations are torch.optim's (SGD with dampening 0 and no Nesterov; Adam
with L2 weight decay, no AMSGrad), so a cohort's clients end where per-client training
with TorchTrainer ends, up to float rounding. Each client keeps its own state (momentum
buffer, Adam moments and step count); ``members`` names the clients that take this step,
so a client that has run out of batches keeps its parameters and state unchanged.
"""

from __future__ import annotations

from typing import Protocol

import torch

from fedloom.core.errors import ConfigError
from fedloom.sim.cohort.stacking import Tensors, per_client

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class StackedOptimizer(Protocol):
    def step(self, params: Tensors, grads: Tensors, members: torch.Tensor | None) -> None:
        """Update ``params[name][members]`` (all clients when None) in place from ``grads``."""
        ...


def _take(tensor: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
    return tensor if members is None else tensor[members]


def _put(tensor: torch.Tensor, members: torch.Tensor | None, value: torch.Tensor) -> None:
    if members is None:
        tensor.copy_(value)
    else:
        tensor.index_copy_(0, members, value)


class StackedSGD:
    """torch.optim.SGD per client: ``g += wd·θ``; ``buf = g`` at a client's first step, then
    ``buf = momentum·buf + g``; ``θ -= lr·buf`` (``lr`` per client)."""

    def __init__(self, params: Tensors, lr: torch.Tensor, momentum: float, weight_decay: float) -> None:
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.buffers = {k: torch.zeros_like(v) for k, v in params.items()} if momentum else {}
        self.started = torch.zeros(len(lr), dtype=torch.bool, device=lr.device)

    def step(self, params: Tensors, grads: Tensors, members: torch.Tensor | None) -> None:
        lr = _take(self.lr, members)
        first = ~_take(self.started, members)
        for name, grad in grads.items():
            theta = _take(params[name], members)
            if self.weight_decay:
                grad = grad.add(theta, alpha=self.weight_decay)
            if self.momentum:
                old = _take(self.buffers[name], members)
                grad = torch.where(per_client(first, old), grad, old.mul(self.momentum).add_(grad))
                _put(self.buffers[name], members, grad)
            _put(params[name], members, theta.addcmul(grad, per_client(-lr, theta)))
        _put(self.started, members, torch.ones_like(first))


class StackedAdam:
    """torch.optim.Adam per client (betas 0.9/0.999, eps 1e-8, L2 weight decay), with each
    client's own step count in its bias corrections."""

    def __init__(self, params: Tensors, lr: torch.Tensor, weight_decay: float) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        self.steps = torch.zeros(len(lr), dtype=torch.float64, device=lr.device)

    def step(self, params: Tensors, grads: Tensors, members: torch.Tensor | None) -> None:
        beta1, beta2 = ADAM_BETAS
        steps = _take(self.steps, members) + 1
        _put(self.steps, members, steps)
        step_size = (_take(self.lr, members).double() / (1 - beta1**steps)).float()
        bias2_sqrt = torch.sqrt(1 - beta2**steps).float()
        for name, grad in grads.items():
            theta = _take(params[name], members)
            if self.weight_decay:
                grad = grad.add(theta, alpha=self.weight_decay)
            avg = _take(self.exp_avg[name], members).lerp_(grad, 1 - beta1)
            avg_sq = _take(self.exp_avg_sq[name], members).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            _put(self.exp_avg[name], members, avg)
            _put(self.exp_avg_sq[name], members, avg_sq)
            denom = (avg_sq.sqrt() / per_client(bias2_sqrt, avg_sq)).add_(ADAM_EPS)
            _put(params[name], members, theta - per_client(step_size, avg) * (avg / denom))


def make_stacked_optimizer(
    name: str, params: Tensors, lr: torch.Tensor, momentum: float, weight_decay: float
) -> StackedOptimizer:
    """The stacked counterpart of TorchTrainer's optimiser ``name``."""
    if name == "sgd":
        return StackedSGD(params, lr, momentum, weight_decay)
    if name == "adam":  # like TorchTrainer, Adam ignores ``momentum`` (it has its own betas)
        return StackedAdam(params, lr, weight_decay)
    raise ConfigError(f"optimizer {name!r} has no cohort counterpart; use 'sgd' or 'adam' (or --cohort off)")
