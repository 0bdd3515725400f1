"""Write a Trainer by hand around your own PyTorch model: the whole "write once" contract.

fedloom ships ``fedloom.TorchTrainer``, but this example deliberately does not use it,
to show exactly what the :class:`fedloom.Trainer` protocol asks of you. A Trainer is
three methods over ``Weights``, a plain ``dict[str, numpy.ndarray]``:

* ``get_weights()`` -- the model's current weights (the initial global model);
* ``fit(weights, config, terms)`` -- load the global weights, train locally with the
  round's :class:`fedloom.FitConfig` (epochs, batch size, learning rate, seed) and return
  a :class:`fedloom.FitResult` (new weights, number of samples, metrics). ``terms`` is
  the optional hook for client-side algorithms (FedProx, SCAFFOLD, FedCurv, FedDyn):
  adding ``terms.gradient(name, value)`` to each parameter's gradient is all it takes
  (``--strategy scaffold``);
* ``evaluate(weights, config)`` -- load weights, return metrics (``loss``, ``accuracy``,
  ``num_samples``).

Converting between the module's ``state_dict`` and NumPy arrays is all the framework
glue there is. ``make_trainer(x, y)`` is the factory the simulation calls per client.

The same ``MyTrainer`` class is what a deployed agent runs on a real site's private
data: nothing in it knows whether it is simulated or deployed, so a strategy tuned
here behaves the same in production.

Run it (10 IID clients on scikit-learn's digits, 10 rounds, a few seconds)::

    python examples/custom_pytorch_trainer.py
    python examples/custom_pytorch_trainer.py --rounds 20 --hidden 128
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import fedloom
from fedloom.algorithms import build_strategy
from fedloom.core import NO_TERMS, ClientTerms
from fedloom.data import load_digits
from fedloom.sim import partition


class DigitsMLP(nn.Module):
    """The user's own model: an ordinary ``nn.Module`` for 8x8 digit images."""

    def __init__(self, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(x)
        return logits


class MyTrainer:
    """A hand-written Trainer: one model, one client's (x, y), plain SGD on cross-entropy."""

    def __init__(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
        self.model = model
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.int64)

    def get_weights(self) -> fedloom.Weights:
        return {name: t.detach().cpu().numpy().copy() for name, t in self.model.state_dict().items()}

    def set_weights(self, weights: fedloom.Weights) -> None:
        state = {name: torch.from_numpy(np.array(array, copy=True)) for name, array in weights.items()}
        self.model.load_state_dict(state, strict=True)

    def fit(
        self, weights: fedloom.Weights, config: fedloom.FitConfig, terms: ClientTerms = NO_TERMS
    ) -> fedloom.FitResult:
        self.set_weights(weights)
        generator = torch.Generator().manual_seed(config.seed)  # reproducible shuffling per (run, round, client)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr)
        self.model.train()
        losses = []
        for _ in range(config.epochs):
            for batch in torch.randperm(len(self.y), generator=generator).split(config.batch_size):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(self.model(self.x[batch]), self.y[batch])
                loss.backward()
                self.add_terms(terms)
                optimizer.step()
                losses.append(loss.item())
        metrics = {"train_loss": float(np.mean(losses)), "local_steps": float(len(losses))}
        return fedloom.FitResult(self.get_weights(), len(self.y), metrics)

    @torch.no_grad()
    def add_terms(self, terms: ClientTerms) -> None:
        """The client-side algorithms' hook: their extra gradient, per parameter (None: nothing)."""
        for name, param in self.model.named_parameters():
            extra = terms.gradient(name, param.detach().numpy())
            if extra is not None and param.grad is not None:
                param.grad += torch.from_numpy(extra)

    def evaluate(self, weights: fedloom.Weights, config: fedloom.EvalConfig) -> dict[str, float]:
        self.set_weights(weights)
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.x)
            loss = nn.functional.cross_entropy(logits, self.y).item()
            accuracy = (logits.argmax(dim=1) == self.y).float().mean().item()
        return {"loss": loss, "accuracy": accuracy, "num_samples": float(len(self.y))}


def make_trainer(x: np.ndarray, y: np.ndarray, hidden: int = 64) -> MyTrainer:
    """The factory: a fresh model around one client's data.

    Seeded so the initial global model (fedloom takes it from client 0) is reproducible;
    every other client's initial weights are overwritten by the global model in ``fit``.
    """
    torch.manual_seed(0)
    return MyTrainer(DigitsMLP(hidden), x, y)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10, help="number of simulated clients (default: 10)")
    parser.add_argument("--rounds", type=int, default=10, help="FedAvg rounds (default: 10)")
    parser.add_argument("--hidden", type=int, default=64, help="width of the MLP's hidden layer (default: 64)")
    parser.add_argument("--lr", type=float, default=0.2, help="client learning rate (default: 0.2)")
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for partition, sampling and shuffling")
    parser.add_argument("--strategy", default="fedavg", help="fedavg, fedprox, scaffold, feddyn, ... (default: fedavg)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # tiny model: threads cost more than they save
    data = load_digits()
    parts = partition("iid", data.train.y, args.clients, args.seed)

    def client_fn(i: int) -> fedloom.Trainer:
        shard = data.train.subset(parts[i])
        return make_trainer(shard.x, shard.y, args.hidden)

    evaluator = make_trainer(data.test.x, data.test.y, args.hidden)  # central evaluation on the test set

    def evaluate_fn(weights: fedloom.Weights) -> dict[str, float]:
        return evaluator.evaluate(weights, fedloom.EvalConfig())

    result = fedloom.simulate(
        client_fn,
        args.clients,
        build_strategy(args.strategy, fraction=1.0, epochs=args.epochs, lr=args.lr, batch_size=16),
        rounds=args.rounds,
        seed=args.seed,
        evaluation=fedloom.Evaluation(evaluate_fn),
        recording=fedloom.Recording(store=None),
    )
    print(f"final accuracy: {result.final_metrics['accuracy']:.4f}")


if __name__ == "__main__":
    main()
