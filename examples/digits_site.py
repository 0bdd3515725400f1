"""One site of a deployed federation: the trainer factory a ``fedloom agent`` runs.

A real site's factory loads its own private data from its own disk; this one stands in
for that by taking site ``site``'s share of an IID split of scikit-learn's digits among
``sites`` sites. The split is seeded with ``seed`` (the same on every site), so the
shares are disjoint and together cover the whole dataset. It returns a
:class:`fedloom.NumpyLogisticTrainer` (pure NumPy, no PyTorch), evaluated on the site's
share of the digits test split.

Arguments arrive from the command line as strings (``--trainer-arg key=value``), so
``make_trainer`` takes strings and converts them itself. Start three sites against an
aggregator (each in its own shell, or on its own machine)::

    FEDLOOM_AGENT_TOKEN=flj_... fedloom agent --server http://localhost:8080 --name site-0 \\
        --trainer examples/digits_site.py:make_trainer --trainer-arg site=0 --upload-initial
    FEDLOOM_AGENT_TOKEN=flj_... fedloom agent --server http://localhost:8080 --name site-1 \\
        --trainer examples/digits_site.py:make_trainer --trainer-arg site=1
    FEDLOOM_AGENT_TOKEN=flj_... fedloom agent --server http://localhost:8080 --name site-2 \\
        --trainer examples/digits_site.py:make_trainer --trainer-arg site=2

(``--upload-initial`` needs an admin token: ``fedloom token create --name site-0 --admin``.)

Run as a script, it trains one site alone, without any federation, and prints the
accuracy on the site's test share: a quick check that the site's data and trainer work::

    python examples/digits_site.py --site 1 --sites 3
"""

from __future__ import annotations

import argparse

import fedloom
from fedloom.data import load_digits
from fedloom.sim import iid


def make_trainer(site: str = "0", sites: str = "3", seed: str = "0") -> fedloom.NumpyLogisticTrainer:
    """Site ``site`` (0-based) of ``sites``: its IID share of the digits, as a NumpyLogisticTrainer."""
    index, count, split_seed = int(site), int(sites), int(seed)
    if not 0 <= index < count:
        raise ValueError(f"site must be in 0..{count - 1}, got {index}")
    data = load_digits()
    train = data.train.subset(iid(len(data.train.y), count, split_seed)[index])
    test = data.test.subset(iid(len(data.test.y), count, split_seed)[index])
    return fedloom.NumpyLogisticTrainer(train.x, train.y, data.num_classes, x_eval=test.x, y_eval=test.y)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train one digits site locally (no federation).")
    parser.add_argument("--site", default="0", help="this site's index, from 0 (default: 0)")
    parser.add_argument("--sites", default="3", help="how many sites share the data (default: 3)")
    parser.add_argument("--rounds", type=int, default=10, help="local epochs (default: 10)")
    args = parser.parse_args()
    trainer = make_trainer(args.site, args.sites)
    weights = trainer.get_weights()
    for epoch in range(args.rounds):
        weights = trainer.fit(weights, fedloom.FitConfig(round=epoch, batch_size=16, lr=0.5, seed=epoch)).weights
    print(f"site {args.site}: {len(trainer.y)} training examples")
    print(f"final accuracy: {trainer.evaluate(weights, fedloom.EvalConfig())['accuracy']:.4f}")


if __name__ == "__main__":
    main()
