"""Compare strategies side by side on digits: drift under label skew, and attackers.

Each line is one 10-client simulation built from a ``SimConfig`` and run with
``simulate_config`` (exactly what ``fedloom sim`` runs). Two questions:

1. 2-class shards (every client sees two digits): does SCAFFOLD or FedCurv beat FedAvg?
2. 20% of clients send boosted updates (model replacement): which aggregators hold?

    python examples/compare_strategies.py            # about 10 seconds
    python examples/compare_strategies.py --rounds 20
"""

from __future__ import annotations

import argparse

from fedloom.sim import SimConfig, simulate_config

DRIFT = {"fedavg": {}, "fedprox": {"proximal_mu": 0.01}, "scaffold": {}, "fedcurv": {}}
ATTACK = {"fedavg": {}, "median": {}, "geometric_median": {}, "krum": {"byzantine_f": 2}}


def accuracy(rounds: int, strategy: str, params: dict[str, float], **settings: object) -> float:
    config = SimConfig(
        dataset="digits", clients=10, rounds=rounds, lr=0.5, batch_size=16, strategy=strategy,
        strategy_params=params, **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    return float(simulate_config(config).history[-1].metrics["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rounds per simulation (default 10)")
    rounds = parser.parse_args().rounds
    print("label skew (2-class shards, 5 of 10 clients per round):")
    for name, params in DRIFT.items():
        print(f"  {name:<18} {accuracy(rounds, name, params, partition='shards', fraction=0.5):.1%}")
    print("20% attackers sending boosted updates (IID data):")
    results = {
        name: accuracy(rounds, name, params, attack="boost", attack_fraction=0.2) for name, params in ATTACK.items()
    }
    for name, value in results.items():
        print(f"  {name:<18} {value:.1%}")
    print(f"final accuracy: {results['geometric_median']:.4f}")


if __name__ == "__main__":
    main()
