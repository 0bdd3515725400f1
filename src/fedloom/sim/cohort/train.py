"""The cohort loop: every client of a cohort takes its own step ``s`` in one vmapped call.

Per step, the vmapped loss over the stacked parameters computes every client's loss on
its own batch (``functional_call`` runs the user's module with a client's tensors;
BatchNorm updates that client's running statistics in its own slice of the stacked
buffers), and one ``torch.autograd.grad`` of their sum gives every client's gradient:
client ``c``'s loss depends on its own slice alone, so the sum's gradient in that slice
is its own. (Not ``vmap(grad(loss))``: ``torch.func.grad`` imports ``torch._dynamo`` at
its first call, ~1-1.5 s of every process's start-up, a worker's too; plain autograd
through the vmapped forward needs none of it; see :func:`client_losses` for the loss.)
The client-side terms (FedProx, SCAFFOLD, FedCurv, FedDyn: ``scale ⊙ θ +
offset`` per client) are added to the gradient, then the stacked optimiser steps.

Short batches: for a model whose samples do not interact (no BatchNorm) trained with
the default cross-entropy, every active client's batch is padded to the step's longest
one and padded samples weigh 0 in the loss (``masked``). Otherwise (BatchNorm's batch
statistics, a user's loss) clients are grouped by batch length at each step, so every
group trains on unpadded batches exactly as per-client training does.

Class-weighted clients (TorchTrainer's ``class_weight``) bring their own per-class
weights, stacked like their parameters: each client's loss is its weighted mean
``Σ w[y_i] ce_i / Σ w[y_i]`` (times the padding mask when masked), so clients whose
labels, and hence weights, differ still train in one cohort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from fedloom.client.torch_trainer import LossFn, TorchTrainer
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.terms import FISHER_PREFIX, AffineTerm, ClientTerms
from fedloom.core.weights import Weights
from fedloom.sim.cohort.optim import StackedOptimizer, make_stacked_optimizer
from fedloom.sim.cohort.plan import BatchPlan, plan_batches
from fedloom.sim.cohort.stacking import StackedWeights, Tensors, stack_weights, trainable_names, unstack_weights

StackedTerm = tuple[torch.Tensor, torch.Tensor]  # (scale, offset), each (clients, *shape)


@dataclass(frozen=True)
class CohortJob:
    """One client's share of a cohort: its data, the weights it starts from, its config and terms."""

    x: torch.Tensor
    y: torch.Tensor
    weights: Weights
    config: FitConfig
    terms: ClientTerms
    #: the client's training loss (None: the cohort's) and its per-class weights (None: unweighted)
    loss_fn: LossFn | None = None
    class_weights: torch.Tensor | None = None


@dataclass(frozen=True)
class TrainerSettings:
    """What the cohort's TorchTrainers must share (they are grouped by it)."""

    model: nn.Module
    optimizer: str
    momentum: float
    weight_decay: float
    loss_fn: LossFn
    device: torch.device

    @classmethod
    def of(cls, trainer: TorchTrainer) -> TrainerSettings:
        """The trainer's settings; a class-weighted one shares the plain cross-entropy (its weights
        travel with its CohortJob), so clients with different weights still share a cohort."""
        loss_fn = trainer.loss_fn if trainer.class_weights is None else nn.functional.cross_entropy
        return cls(trainer.model, trainer.optimizer, trainer.momentum, trainer.weight_decay, loss_fn, trainer.device)

    def key(self) -> tuple[Any, ...]:
        return (id(self.model), self.optimizer, self.momentum, self.weight_decay, self.loss_fn, str(self.device))


def uses_masking(model: nn.Module, loss_fn: LossFn) -> bool:
    """Whether padded samples weighted 0 leave every real sample's gradient exact."""
    return loss_fn is nn.functional.cross_entropy and not any(isinstance(m, _BatchNorm) for m in model.modules())


def step_function(model: nn.Module, loss_fn: LossFn, masked: bool, weighted: bool = False) -> Callable[..., Any]:
    """``(params, fixed, x, y, w[, class_w]) -> (grads, (loss, correct))`` for stacked clients (see the
    module docstring); ``class_w`` (each client's per-class weights) is read only when ``weighted``."""

    def forward(params: Tensors, fixed: Tensors, x: torch.Tensor) -> Any:
        return functional_call(model, (params, fixed), (x,))

    def correct_of(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return ((out.argmax(dim=1) == y).to(w.dtype) * w).sum()

    outputs = vmap(forward, randomness="error")
    corrects = vmap(correct_of)

    def step(
        params: Tensors,
        fixed: Tensors,
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        class_w: torch.Tensor | None = None,
    ) -> Any:
        leaves = {name: tensor.detach().requires_grad_() for name, tensor in params.items()}
        with torch.enable_grad():
            out = outputs(leaves, fixed, x)
            if weighted and class_w is not None:
                loss = weighted_client_losses(out, y, w, class_w)
            else:
                loss = client_losses(out, y, w, loss_fn, masked)
            found = torch.autograd.grad(loss.sum(), list(leaves.values()), allow_unused=True)
        grads = {
            name: torch.zeros_like(tensor) if g is None else g
            for (name, tensor), g in zip(params.items(), found, strict=True)
        }  # a parameter the loss does not use has a zero gradient, as torch.func.grad gives it
        return grads, (loss.detach(), corrects(out.detach(), y, w))

    return step


def client_losses(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor, loss_fn: LossFn, masked: bool) -> torch.Tensor:
    """Every client's loss ``(clients,)`` from the stacked outputs ``(clients, batch, classes)``.

    Cross-entropy (the masked loss, or TorchTrainer's default) is computed on the flattened
    batch with the ordinary kernel, per sample then per client: under vmap it would go through
    nll_loss's Python decomposition, whose first call imports sympy (~0.35 s of a process's
    start-up). A user's loss is vmapped over the clients."""
    plain_ce = masked or loss_fn is nn.functional.cross_entropy
    if plain_ce and out.dim() == 3 and y.dim() == 2:
        each = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
        return (each * w).sum(dim=1) / w.sum(dim=1) if masked else each.mean(dim=1)
    if masked:
        return vmap(_masked_cross_entropy)(out, y, w)
    return vmap(loss_fn)(out, y)


def weighted_client_losses(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor, class_w: torch.Tensor) -> torch.Tensor:
    """Every client's class-weighted mean cross-entropy ``sum(w_i c[y_i] ce_i) / sum(w_i c[y_i])``:
    TorchTrainer's weighted loss, with padding (``w`` 0) left out as in the masked loss."""
    if out.dim() == 3 and y.dim() == 2:
        each = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
        sample_w = w * torch.gather(class_w, 1, y)
        return (each * sample_w).sum(dim=1) / sample_w.sum(dim=1)
    return vmap(_weighted_cross_entropy)(out, y, w, class_w)


def _weighted_cross_entropy(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor, class_w: torch.Tensor) -> torch.Tensor:
    """One client's class-weighted mean cross-entropy over its real samples."""
    sample_w = w * class_w[y]
    return (nn.functional.cross_entropy(out, y, reduction="none") * sample_w).sum() / sample_w.sum()


def _masked_cross_entropy(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One client's mean cross-entropy over its real samples (padding weighs 0)."""
    return (nn.functional.cross_entropy(out, y, reduction="none") * w).sum() / w.sum()


def stack_terms(model: nn.Module, jobs: Sequence[CohortJob], device: torch.device) -> dict[str, StackedTerm]:
    """Per trainable parameter with a term in any client: stacked (scale, offset), zeros where none."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    stacked: dict[str, StackedTerm] = {}
    for name in trainable_names(model):
        terms = [job.terms.term(name) for job in jobs]
        if all(t is None for t in terms):
            continue
        scale, offset = (
            torch.from_numpy(np.stack([_broadcast(t, field, shapes[name]) for t in terms])).to(device)
            for field in ("scale", "offset")
        )
        stacked[name] = (scale, offset)
    return stacked


def stack_class_weights(jobs: Sequence[CohortJob], device: torch.device) -> torch.Tensor:
    """``(clients, classes)`` class weights, ones for an unweighted client among weighted ones (the
    plain mean); ``(clients, 1)`` placeholders, never read, when no client is weighted."""
    given = [job.class_weights for job in jobs if job.class_weights is not None]
    if not given:
        return torch.ones((len(jobs), 1), device=device)
    ones = torch.ones_like(given[0])
    return torch.stack([ones if job.class_weights is None else job.class_weights for job in jobs]).to(device)


def _broadcast(term: AffineTerm | None, field: str, shape: tuple[int, ...]) -> np.ndarray:
    """A term's scale or offset as float32 of the parameter's shape (0 for a client without the term)."""
    value = 0.0 if term is None else getattr(term, field)
    return np.broadcast_to(np.asarray(value, np.float32), shape)


class CohortLoop:
    """The state of one cohort's training: stacked weights, optimiser, terms, accumulators."""

    def __init__(self, settings: TrainerSettings, stack: StackedWeights, jobs: Sequence[CohortJob]) -> None:
        device = settings.device
        self.stack = stack
        self.masked = uses_masking(settings.model, settings.loss_fn)
        self.class_w = stack_class_weights(jobs, device)
        weighted = any(job.class_weights is not None for job in jobs)
        self.step = step_function(settings.model, settings.loss_fn, self.masked, weighted)
        lr = torch.tensor([job.config.lr for job in jobs], dtype=torch.float32, device=device)
        self.optimizer: StackedOptimizer = make_stacked_optimizer(
            settings.optimizer, stack.params, lr, settings.momentum, settings.weight_decay
        )
        self.terms = stack_terms(settings.model, jobs, device)
        self.loss_sum = torch.zeros(len(jobs), dtype=torch.float64, device=device)
        self.correct = torch.zeros(len(jobs), dtype=torch.float64, device=device)

    def groups(self, plan: BatchPlan, step: int) -> list[tuple[np.ndarray, int]]:
        """(clients, batch length) trained together at ``step``: one padded group, or one per length."""
        lengths = plan.length[step]
        active = np.flatnonzero(lengths)
        if self.masked:
            return [(active, int(lengths[active].max()))] if len(active) else []
        return [(active[lengths[active] == n], int(n)) for n in np.unique(lengths[active])]

    def run(self, x: torch.Tensor, y: torch.Tensor, plan: BatchPlan) -> None:
        device = x.device
        index, weight = torch.from_numpy(plan.index).to(device), torch.from_numpy(plan.weight).to(device)
        clients = plan.index.shape[1]
        for s in range(plan.steps):
            for members, length in self.groups(plan, s):
                sel = None if len(members) == clients else torch.from_numpy(members).to(device)
                rows = index[s] if sel is None else index[s][sel]
                w = (weight[s] if sel is None else weight[s][sel])[:, :length]
                rows = rows[:, :length]
                self.train_group(sel, x[rows], y[rows], w)

    def train_group(self, sel: torch.Tensor | None, xb: torch.Tensor, yb: torch.Tensor, w: torch.Tensor) -> None:
        """One step of the clients ``sel`` (all when None) on their batches ``xb``, ``yb``."""
        params, fixed = self.stack.params, self.stack.fixed
        if sel is not None:
            params = {k: v[sel] for k, v in params.items()}
            fixed = {k: v[sel] for k, v in fixed.items()}
        class_w = self.class_w if sel is None else self.class_w[sel]
        grads, (loss, correct) = self.step(params, fixed, xb, yb, w, class_w)
        if sel is not None:  # BatchNorm updated the copies' running statistics in place
            for k, v in fixed.items():
                self.stack.fixed[k].index_copy_(0, sel, v)
        for name, (scale, offset) in self.terms.items():
            theta = params[name]
            grads[name] = grads[name] + torch.addcmul(
                offset if sel is None else offset[sel], theta, scale if sel is None else scale[sel]
            )
        self.optimizer.step(self.stack.params, grads, sel)
        counts = w.sum(dim=1).double()
        if sel is None:
            self.loss_sum += loss.double() * counts
            self.correct += correct.double()
        else:
            self.loss_sum.index_add_(0, sel, loss.double() * counts)
            self.correct.index_add_(0, sel, correct.double())


def train_cohort(settings: TrainerSettings, jobs: Sequence[CohortJob]) -> list[FitResult]:
    """Train every job as TorchTrainer.fit would, together; one FitResult per job, in order."""
    model, device = settings.model, settings.device
    batch_size = jobs[0].config.batch_size
    stack = stack_weights(model, [job.weights for job in jobs], device)
    asked = [job.terms.report_initial_loss for job in jobs]
    initial = [_initial_loss(settings, stack, c, job) if asked[c] else None for c, job in enumerate(jobs)]
    sizes = [len(job.x) for job in jobs]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    seeds, epochs = [job.config.seed for job in jobs], [job.config.epochs for job in jobs]
    plan = plan_batches(sizes, offsets.tolist(), seeds, epochs, batch_size)
    x = torch.cat([job.x for job in jobs]).to(device)
    y = torch.cat([job.y for job in jobs]).to(device)
    loop = CohortLoop(settings, stack, jobs)
    model.train()
    loop.run(x, y, plan)
    torch.manual_seed(jobs[-1].config.seed)  # the global generator as per-client training leaves it
    trained = unstack_weights(stack)
    loss_sum, correct = loop.loss_sum.cpu().numpy(), loop.correct.cpu().numpy()
    results = []
    for c, job in enumerate(jobs):
        seen = sizes[c] * job.config.epochs
        metrics = {
            "train_loss": float(loss_sum[c]) / seen,
            "train_accuracy": float(correct[c]) / seen,
            "local_steps": float(plan.steps_of(c)),
        }
        if initial[c] is not None:
            metrics["initial_loss"] = float(initial[c])  # type: ignore[arg-type]
        fisher = _fisher(settings, stack, c, job) if job.terms.report_fisher else {}
        results.append(FitResult({**trained[c], **fisher}, sizes[c], metrics))
    return results


def _client_tensors(stack: StackedWeights, c: int) -> tuple[Tensors, Tensors]:
    return {k: v[c] for k, v in stack.params.items()}, {k: v[c].clone() for k, v in stack.fixed.items()}


def _initial_loss(settings: TrainerSettings, stack: StackedWeights, c: int, job: CohortJob) -> float:
    """The loaded model's mean loss on the client's data (eval mode), as TorchTrainer reports it."""
    params, fixed = _client_tensors(stack, c)
    settings.model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(job.x), 1024):
            xb, yb = job.x[start : start + 1024].to(settings.device), job.y[start : start + 1024].to(settings.device)
            out = functional_call(settings.model, (params, fixed), (xb,))
            total += float((job.loss_fn or settings.loss_fn)(out, yb)) * len(yb)
    return total / len(job.x)


def _fisher(settings: TrainerSettings, stack: StackedWeights, c: int, job: CohortJob) -> Weights:
    """Diagonal empirical Fisher at the client's trained weights, as TorchTrainer computes it."""
    params, fixed = _client_tensors(stack, c)
    model, batch_size = settings.model, job.config.batch_size
    model.eval()

    loss_fn = job.loss_fn or settings.loss_fn

    def loss_of(p: Tensors, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, (p, fixed), (xb,)), yb)

    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    batches = 0
    for start in range(0, len(job.x), batch_size):
        xb = job.x[start : start + batch_size].to(settings.device)
        yb = job.y[start : start + batch_size].to(settings.device)
        for k, g in grad(loss_of)(params, xb, yb).items():
            sums[k] += g**2
        batches += 1
    return {FISHER_PREFIX + k: (v / max(batches, 1)).cpu().numpy() for k, v in sums.items()}
