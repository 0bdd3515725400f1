"""DP-SGD for a PyTorch module through Opacus: per-example clipping, Gaussian noise, Poisson batches.

Opacus's ``GradSampleModule`` computes each example's gradient and its ``DPOptimizer``
clips them to C, sums them, adds N(0, (zC)²) and divides by the expected batch size B.
fedloom draws the batches itself, by Poisson sampling at q = B/n for ⌈n/B⌉ steps an
epoch (the sampling the accountant composes), because the server knows the fit config's
seed: a batch drawn from it, or noise drawn from torch's seeded generator, would be
known to the very party the noise hides the data from. Both are drawn from fresh
operating-system entropy instead, and the noise uses Opacus's ``secure_mode`` sum of
Gaussians (which resists floating-point attacks on the noise; it needs no extra package).

The module is wrapped only for the fit: the hooks are removed afterwards and the
caller reads the state dict from the unwrapped module, so the weights sent back carry
exactly the global model's names (Opacus's wrapper would prefix them with ``_module.``).
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedloom.algorithms.dp_sgd_settings import DPSGDSettings
from fedloom.core.errors import ClientError, ConfigError
from fedloom.core.terms import ClientTerms


def _opacus() -> tuple[type, type, type]:
    try:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator
    except ImportError:
        raise ConfigError("DP-SGD needs Opacus, which is not installed: run `pip install 'fedloom[opacus]'`") from None
    return GradSampleModule, DPOptimizer, ModuleValidator


def refuse_unsupported(model: nn.Module, terms: ClientTerms) -> None:
    """A ClientError before any training when DP-SGD cannot train this model or report what is asked."""
    validator = _opacus()[2]
    model.train()  # the validator refuses a module left in eval mode (e.g. by the last evaluate)
    problems = validator.validate(model, strict=False)  # type: ignore[attr-defined]
    if problems:
        raise ClientError(
            f"DP-SGD cannot train this model: {'; '.join(str(p) for p in problems)}. BatchNorm mixes the "
            "examples of a batch, so per-example gradients (and the privacy guarantee) do not exist for it: "
            "build the model with GroupNorm (or LayerNorm) instead, e.g. model = opacus.validators."
            "ModuleValidator.fix(model), and start the run from that model. fedloom does not swap layers "
            "itself, because the state-dict names the server's global model has would change"
        )
    if terms.report_fisher or terms.report_initial_loss:
        raise ClientError(
            "this strategy asks the client for its Fisher information or initial loss, which are computed "
            "from the local data without noise; DP-SGD's ε would not cover them. Use a strategy without "
            "them (not FedCurv, not q-FedAvg) with --dp-sgd"
        )


def _secret_seed() -> int:
    return secrets.randbits(63)


@dataclass(frozen=True)
class PrivateBatches:
    """Poisson-sampled batches of ``num_examples``: each example is in a batch with probability ``rate``."""

    num_examples: int
    rate: float
    steps_per_epoch: int

    @classmethod
    def for_batch_size(cls, num_examples: int, batch_size: int, rate: float) -> PrivateBatches:
        return cls(num_examples, rate, math.ceil(num_examples / batch_size))

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        for _ in range(self.steps_per_epoch):
            yield np.flatnonzero(rng.random(self.num_examples) < self.rate)


@dataclass(frozen=True)
class PrivateFit:
    """One client's DP-SGD fit: the module, its data, the loss and the base optimiser."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    base_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    device: torch.device


def train_dp_sgd(
    fit: PrivateFit, settings: DPSGDSettings, epochs: int, batches: PrivateBatches, after_noise: Callable[[], None]
) -> int:
    """``epochs`` of DP-SGD on ``fit.model`` in place; returns the number of noisy steps taken.

    ``after_noise`` runs between the noise and the step: the client-side terms (FedProx, ...)
    go there, since they depend only on θ and the global model, never on the data."""
    grad_sample_module, dp_optimizer, _ = _opacus()
    params = [p for p in fit.model.parameters() if p.requires_grad]
    wrapped = grad_sample_module(fit.model, loss_reduction="mean", strict=False)
    base = fit.base_optimizer(params)
    optimizer = dp_optimizer(
        base,
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        expected_batch_size=batches.rate * batches.num_examples,
        generator=torch.Generator(device=fit.device).manual_seed(_secret_seed()),
        secure_mode=True,
    )
    rng = np.random.default_rng(_secret_seed())
    fit.model.train()
    steps = 0
    with warnings.catch_warnings():
        # Opacus's hooks on a first layer whose input needs no gradient make torch warn; harmless
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        try:
            for _ in range(epochs):
                for idx in batches.epoch(rng):
                    optimizer.zero_grad(set_to_none=True)
                    _per_example_gradients(wrapped, fit, params, idx)
                    if optimizer.pre_step():
                        after_noise()
                        base.step()
                    steps += 1
        finally:
            wrapped._close()
    return steps


def _per_example_gradients(wrapped: nn.Module, fit: PrivateFit, params: list[nn.Parameter], idx: np.ndarray) -> None:
    """Each sampled example's gradient in ``p.grad_sample``; an empty Poisson batch has none (the
    step still adds noise, as the accountant assumes)."""
    if len(idx) == 0:
        for p in params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)  # type: ignore[attr-defined]
        return
    index = torch.from_numpy(idx)
    xb, yb = fit.x[index].to(fit.device), fit.y[index].to(fit.device)
    fit.loss_fn(wrapped(xb), yb).backward()  # type: ignore[no-untyped-call]
