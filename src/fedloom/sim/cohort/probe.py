"""Whether a client may be trained in a cohort, and if not, the one reason why.

A model is *safe* for cohort training when one probe step passes: two stacked copies of
the model take a vmapped gradient step on the client's first samples, with vmap's
``randomness="error"``, and the gradients and updated buffers equal those of an ordinary
``loss.backward()`` on a copy of the module. That refuses what vmap cannot batch
(data-dependent Python control flow, ``.item()``, unsupported in-place buffer updates)
and anything random (dropout: per-client training draws its masks from the global
generator client after client, which a cohort cannot replay). The verdict is kept per
module object, so the probe runs once per model and process. The trainer itself must
be fedloom's TorchTrainer (a subclass that overrides how it trains may do anything), and
DP-SGD trains per client (Opacus's per-sample clipping and noise).
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from fedloom.algorithms.dp_sgd_settings import dp_sgd_from_extra
from fedloom.client.torch_trainer import TorchTrainer
from fedloom.client.trainer import Trainer
from fedloom.core.fit import FitConfig
from fedloom.sim.cohort.stacking import trainable_names
from fedloom.sim.cohort.train import step_function

PROBE_SAMPLES = 4
#: relative bound on a probe gradient's difference from autograd's (float32 reassociation)
PROBE_TOLERANCE = 1e-4

#: ``auto`` on CPU batches only models up to this many parameters (see :func:`auto_refusal`)
CPU_AUTO_MAX_PARAMETERS = 50_000

_verdicts: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()


def cohort_refusal(trainer: Trainer, config: FitConfig) -> str | None:
    """None when this client may join a cohort; otherwise why not, in one sentence."""
    if not isinstance(trainer, TorchTrainer):
        return f"the trainer is a {type(trainer).__name__}, not fedloom's TorchTrainer"
    for method in ("fit", "_fisher", "_loss_on_train", "_term_tensors"):
        if getattr(type(trainer), method) is not getattr(TorchTrainer, method):
            return f"{type(trainer).__name__} overrides TorchTrainer.{method}"
    if dp_sgd_from_extra(config.extra) is not None:
        return "DP-SGD clips and noises each client's per-sample gradients with Opacus, one client at a time"
    if config.epochs < 1:
        return f"epochs={config.epochs}: a client without a local step is trained (and refused) on its own"
    return model_refusal(trainer)


def auto_refusal(trainer: TorchTrainer) -> str | None:
    """Why ``auto`` trains this (safe) model one by one anyway: on CPU, only small models gain.

    Measured on this project's 2-core machine, one thread, one round: logistic regression
    (7,850 parameters, 100 clients) 2.3x faster as a cohort, but the MLP (199k, 10 clients)
    and the CNN (215k, 10 clients) 1.6x *slower*: a step of a larger model already fills
    the core's vector units, and the batched kernels (grouped convolutions) cost more than
    they save. On CUDA every safe model is batched. An explicit ``--cohort N`` always is."""
    if trainer.device.type != "cpu":
        return None
    count = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if count > CPU_AUTO_MAX_PARAMETERS:
        return (
            f"on CPU, --cohort auto batches models of up to {CPU_AUTO_MAX_PARAMETERS:,} parameters and this one has"
            f" {count:,} (larger ones train faster one by one here; --cohort N forces a cohort)"
        )
    return None


def model_refusal(trainer: TorchTrainer) -> str | None:
    """The probe's verdict on the trainer's module (computed once per module)."""
    model = trainer.model
    if model in _verdicts:
        return _verdicts[model]
    x = trainer.x[:PROBE_SAMPLES].to(trainer.device)
    y = trainer.y[:PROBE_SAMPLES].to(trainer.device)
    try:
        expected = _reference_step(model, trainer, x, y)
    except Exception:  # the data cannot train at all: not vmap's fault, judge on another client
        return None
    try:
        verdict = _compare(expected, _vmapped_step(model, trainer, x, y))
    except Exception as exc:  # whatever vmap refuses is a reason to train this model per client
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        verdict = f"vmap cannot batch this model ({type(exc).__name__}: {first[:200]})"
    _verdicts[model] = verdict
    return verdict


def _reference_step(
    model: nn.Module, trainer: TorchTrainer, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Gradients and updated buffers of one ordinary training step on a copy of the module."""
    twin = copy.deepcopy(model).train()
    twin.zero_grad(set_to_none=True)
    trainer.loss_fn(twin(x), y).backward()  # type: ignore[no-untyped-call]
    out = {n: p.grad.detach().clone() for n, p in twin.named_parameters() if p.requires_grad and p.grad is not None}
    return out | {f"buffer:{n}": b.detach().clone() for n, b in twin.named_buffers()}


def _vmapped_step(model: nn.Module, trainer: TorchTrainer, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The cohort's own step (:func:`~fedloom.sim.cohort.train.step_function`, unmasked: the
    trainer's loss) for two stacked copies; the first copy's gradients and buffers."""
    trainable = set(trainable_names(model))
    params = {n: torch.stack([p.detach()] * 2) for n, p in model.named_parameters() if n in trainable}
    fixed = {n: torch.stack([t.detach()] * 2) for n, t in model.state_dict().items() if n not in trainable}
    weight = torch.ones(2, len(y), device=x.device)
    was_training = model.training
    model.train()
    try:
        step = step_function(model, trainer.loss_fn, masked=False)
        grads, _ = step(params, fixed, torch.stack([x, x]), torch.stack([y, y]), weight)
    finally:
        model.train(was_training)
    buffers = {n: t for n, t in fixed.items() if n in dict(model.named_buffers())}
    return {n: g[0] for n, g in grads.items()} | {f"buffer:{n}": t[0] for n, t in buffers.items()}


def _compare(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """None when the vmapped step reproduces the ordinary one; else the first tensor that differs."""
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            return f"a probe step under vmap has no matching {name!r}"
        scale = 1.0 + float(want.abs().max()) if want.numel() and want.is_floating_point() else 1.0
        diff = float((have.double() - want.double()).abs().max()) if want.numel() else 0.0
        if diff > PROBE_TOLERANCE * scale:
            return f"a probe step under vmap differs from per-client training in {name!r} by {diff:.3g}"
    return None
