"""The PyTorch adapter: a model + loss + optimiser settings + a client's arrays become a Trainer.

The user keeps writing an ordinary ``nn.Module``; the adapter moves weights between the
module's ``state_dict`` and fedloom's NumPy ``Weights``, and runs E epochs of mini-batch
training with the round's batch size, learning rate and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedloom.algorithms.dp_sgd_settings import DPSGDSettings, dp_sgd_from_extra
from fedloom.client.batching import check_arrays, epoch_batches
from fedloom.client.class_weights import ClassWeight, class_weight_vector, parse_class_weight
from fedloom.client.dp_sgd import poisson_rate
from fedloom.client.dp_sgd_torch import PrivateBatches, PrivateFit, refuse_unsupported, train_dp_sgd
from fedloom.core.classification_metrics import classification_metrics
from fedloom.core.errors import ConfigError
from fedloom.core.fit import EvalConfig, FitConfig, FitResult
from fedloom.core.terms import FISHER_PREFIX, NO_TERMS, ClientTerms
from fedloom.core.weights import Weights, check_compatible

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OPTIMIZERS = ("sgd", "adam")


def state_to_weights(model: nn.Module) -> Weights:
    """The module's state_dict as NumPy arrays (copied, on CPU)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()}


def load_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Copy NumPy ``weights`` into the module in place, after checking names, shapes and dtypes."""
    current = model.state_dict()
    check_compatible(weights, {k: v.detach().cpu().numpy() for k, v in current.items()})
    with torch.no_grad():
        for name, tensor in current.items():
            tensor.copy_(torch.from_numpy(np.array(weights[name], copy=True)))


class _PlainSGD:
    """``w -= lr * grad`` for every parameter in one fused call.

    Mathematically torch.optim.SGD without momentum or weight decay, but without its
    per-call wrappers (and the one-off import of torch._dynamo they trigger), which
    dominate the cost of small models trained on a few batches per client.
    """

    def __init__(self, params: Any, lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        with_grad = [p for p in self.params if p.grad is not None]
        torch._foreach_add_(with_grad, [p.grad for p in with_grad], alpha=-self.lr)


def _make_optimizer(
    name: str, params: Any, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer | _PlainSGD:
    if name == "sgd" and momentum == 0 and weight_decay == 0:
        return _PlainSGD(params, lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"optimizer {name!r} is not supported; use one of {OPTIMIZERS}")


@torch.no_grad()
def _add_terms(triples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """The client-side terms (any algorithm's): every step, ``grad += scale ⊙ θ + offset``."""
    for param, scale, offset in triples:
        if param.grad is not None:
            param.grad.add_(torch.addcmul(offset, param, scale))


def _weighted(weight: torch.Tensor) -> LossFn:
    """Class-weighted cross-entropy: the weighted mean ``Σ w[y_i] ce_i / Σ w[y_i]``."""

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y, weight=weight)

    return loss


def _per_example_weighted(weight: torch.Tensor) -> LossFn:
    """DP-SGD's class-weighted loss, ``mean_i w[y_i] ce_i``: each example's term depends on its own
    label only, as per-example clipping needs (the weighted mean's denominator couples them)."""

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (nn.functional.cross_entropy(out, y, reduction="none") * weight[y]).mean()

    return loss


class TorchTrainer:
    """A Trainer around a PyTorch module and one client's (x, y) arrays.

    ``model`` may be a module (reused, e.g. one per worker process) or a zero-argument
    factory. A fresh optimiser is made each round, as in FedAvg, so no optimiser state
    leaks across rounds. ``device`` is any torch device string ("cpu", "cuda", "cuda:1").
    ``class_weight`` ("none", "balanced" or one weight per class, fedloom.client.class_weights)
    weights the training cross-entropy by class; ``evaluate`` reports the unweighted loss.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[], nn.Module],
        x: np.ndarray,
        y: np.ndarray,
        *,
        x_eval: np.ndarray | None = None,
        y_eval: np.ndarray | None = None,
        loss: LossFn | None = None,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        device: str = "cpu",
        class_weight: ClassWeight = "none",
    ) -> None:
        check_arrays(x, y, "train")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {optimizer!r} is not supported; use one of {OPTIMIZERS}")
        self.device = torch.device(device)
        self.model = (model if isinstance(model, nn.Module) else model()).to(self.device)
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        self.x_eval = self.x if x_eval is None else torch.from_numpy(np.ascontiguousarray(x_eval, dtype=np.float32))
        self.y_eval = self.y if y_eval is None else torch.from_numpy(np.ascontiguousarray(y_eval, dtype=np.int64))
        self.eval_loss_fn: LossFn = loss or nn.functional.cross_entropy
        self.class_weights = self._class_weights(class_weight, loss)
        self.loss_fn: LossFn = self.eval_loss_fn if self.class_weights is None else _weighted(self.class_weights)
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay

    def _class_weights(self, spec: ClassWeight, loss: LossFn | None) -> torch.Tensor | None:
        """The per-class weights of the training loss (see fedloom.client.class_weights), None for none.

        Their length is the model's number of outputs, read from one forward pass in eval mode."""
        if parse_class_weight(spec) == "none":
            return None
        if loss is not None:
            raise ConfigError("class_weight weights the built-in cross-entropy: drop loss=..., or weight your own loss")
        was_training = self.model.training
        self.model.eval()  # no BatchNorm statistics or counters move
        with torch.no_grad():
            num_classes = int(self.model(self.x[:1].to(self.device)).shape[1])
        self.model.train(was_training)
        vector = class_weight_vector(spec, self.y.numpy(), num_classes)
        return None if vector is None else torch.from_numpy(vector.astype(np.float32)).to(self.device)

    def get_weights(self) -> Weights:
        return state_to_weights(self.model)

    def fit(self, weights: Weights, config: FitConfig, terms: ClientTerms = NO_TERMS) -> FitResult:
        """E epochs of mini-batch training; adds the client-side ``terms`` (any algorithm's) to
        each trainable parameter's gradient at every step. With ``dp_sgd`` in ``config.extra``
        it trains with DP-SGD instead (fedloom.client.dp_sgd)."""
        dp_sgd = dp_sgd_from_extra(config.extra)
        if dp_sgd is not None:
            return self._fit_dp_sgd(weights, config, terms, dp_sgd)
        load_weights(self.model, weights)
        initial = {"initial_loss": self._loss_on_train()} if terms.report_initial_loss else {}
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        opt = _make_optimizer(self.optimizer, self.model.parameters(), config.lr, self.momentum, self.weight_decay)
        extra = self._term_tensors(terms)
        self.model.train()
        total_loss, total_correct, seen, steps = 0.0, 0, 0, 0
        for _ in range(config.epochs):
            for idx in epoch_batches(len(self.x), config.batch_size, rng):
                index = torch.from_numpy(idx)
                xb, yb = self.x[index].to(self.device), self.y[index].to(self.device)
                opt.zero_grad(set_to_none=True)
                out = self.model(xb)
                loss = self.loss_fn(out, yb)
                loss.backward()  # type: ignore[no-untyped-call]
                if extra:
                    _add_terms(extra)
                opt.step()
                total_loss += float(loss.detach()) * len(idx)
                total_correct += int((out.detach().argmax(dim=1) == yb).sum())
                seen += len(idx)
                steps += 1
        metrics = {"train_loss": total_loss / seen, "train_accuracy": total_correct / seen, "local_steps": float(steps)}
        fisher = self._fisher(config.batch_size) if terms.report_fisher else {}
        return FitResult({**self.get_weights(), **fisher}, len(self.x), {**metrics, **initial})

    def dp_sgd_sample_rate(self, batch_size: int) -> float:
        """DP-SGD's Poisson rate q = B/n on this client's n training examples (at most 1)."""
        return poisson_rate(batch_size, len(self.x))

    def _fit_dp_sgd(
        self, weights: Weights, config: FitConfig, terms: ClientTerms, settings: DPSGDSettings
    ) -> FitResult:
        """E epochs of DP-SGD (Opacus). Only the weights and the step count leave the client: the
        training loss and accuracy are computed from the data without noise, outside ε."""
        refuse_unsupported(self.model, terms)
        load_weights(self.model, weights)
        torch.manual_seed(config.seed)  # dropout only; batches and noise use fresh OS entropy
        fit = PrivateFit(
            self.model,
            self.x,
            self.y,
            self.loss_fn if self.class_weights is None else _per_example_weighted(self.class_weights),
            lambda params: self._torch_optimizer(params, config.lr),
            self.device,
        )
        batches = PrivateBatches.for_batch_size(
            len(self.x), config.batch_size, self.dp_sgd_sample_rate(config.batch_size)
        )
        extra = self._term_tensors(terms)
        steps = train_dp_sgd(fit, settings, config.epochs, batches, lambda: _add_terms(extra))
        return FitResult(self.get_weights(), len(self.x), {"local_steps": float(steps)})

    def _torch_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """A torch.optim optimiser (Opacus wraps only those) with this trainer's settings."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _term_tensors(self, terms: ClientTerms) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(parameter, scale, offset) of each trainable parameter with a term, on the device, once per fit."""
        triples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for name, param in self.model.named_parameters():
            term = terms.term(name)
            if term is not None and param.requires_grad:
                triples.append((param, self._tensor(term.scale), self._tensor(term.offset)))
        return triples

    def _tensor(self, value: np.ndarray | float) -> torch.Tensor:
        return torch.from_numpy(np.asarray(value, np.float32)).to(self.device)

    def _fisher(self, batch_size: int) -> Weights:
        """Diagonal empirical Fisher: the mean squared mini-batch gradient at the trained weights."""
        named = [(k, p) for k, p in self.model.named_parameters() if p.requires_grad]
        sums = {k: torch.zeros_like(p) for k, p in named}
        batches = 0
        self.model.eval()
        for start in range(0, len(self.x), batch_size):
            xb, yb = (
                self.x[start : start + batch_size].to(self.device),
                self.y[start : start + batch_size].to(self.device),
            )
            self.model.zero_grad(set_to_none=True)
            self.loss_fn(self.model(xb), yb).backward()  # type: ignore[no-untyped-call]
            for k, p in named:
                if p.grad is not None:
                    sums[k] += p.grad.detach() ** 2
            batches += 1
        self.model.zero_grad(set_to_none=True)
        return {FISHER_PREFIX + k: (v / max(batches, 1)).cpu().numpy() for k, v in sums.items()}

    def _loss_on_train(self) -> float:
        """The loaded model's mean loss on this client's training data (q-FedAvg's F_k)."""
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(self.x), 1024):
                xb, yb = self.x[start : start + 1024].to(self.device), self.y[start : start + 1024].to(self.device)
                total += float(self.loss_fn(self.model(xb), yb)) * len(yb)
        return total / len(self.x)

    def evaluate(self, weights: Weights, config: EvalConfig) -> dict[str, float]:
        """Loss, accuracy and the imbalance-aware metrics (fedloom.core.classification_metrics) of one
        pass over the evaluation data; the class weights shape training only, not this loss."""
        load_weights(self.model, weights)
        self.model.eval()
        total_loss, probs = 0.0, []
        with torch.no_grad():
            for start in range(0, len(self.x_eval), config.batch_size):
                xb = self.x_eval[start : start + config.batch_size].to(self.device)
                yb = self.y_eval[start : start + config.batch_size].to(self.device)
                out = self.model(xb)
                total_loss += float(self.eval_loss_fn(out, yb)) * len(yb)
                probs.append(out.detach().double().softmax(dim=1).cpu())
        n = len(self.y_eval)
        scores = torch.cat(probs).numpy()
        return {"loss": total_loss / n, **_class_metrics(self.y_eval.numpy(), scores), "num_samples": float(n)}


def _class_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The classification metrics; a model whose output is not one score per class gets accuracy only."""
    if probs.ndim == 2 and probs.shape[1] >= 2 and y.min() >= 0 and y.max() < probs.shape[1]:
        return classification_metrics(y, probs)
    return {"accuracy": float((probs.reshape(len(y), -1).argmax(axis=1) == y).mean())}
