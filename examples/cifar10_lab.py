"""The CIFAR-10 lab: FedAvg over a handful of clients, each holding an IID chunk of CIFAR-10.

What it shows:

* the built-in CIFAR-10 loader (the binary batches, never the pickled version) and the
  lab's ``cifar_cnn`` chosen by name through :class:`fedloom.sim.SimConfig`;
* an IID split of the 50,000 training images over ``--clients`` clients (5 by default);
* FedAvg for ``--rounds`` rounds, the global model evaluated on the 10,000 test images
  after every round, and everything recorded in the store (``--home DIR``, default
  ``$FEDLOOM_HOME`` or ``./fedloom-runs``) so the run can be watched and compared.

Get the data once (nothing is downloaded at run time), then run it::

    mkdir -p ~/fedloom-data
    curl -LO https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
    tar xzf cifar-10-binary.tar.gz -C ~/fedloom-data
    python examples/cifar10_lab.py --data-dir ~/fedloom-data --rounds 5 --clients 5

It needs PyTorch (``pip install 'fedloom[torch]'``). On a CPU one round costs one local
epoch over all 50,000 images; ``--device cuda`` trains on a GPU. See docs/cifar10_lab.md.
"""

from __future__ import annotations

import argparse
import sys

from fedloom import FedloomError
from fedloom.sim import ProgressPrinter, Recording, SimConfig, simulate_config
from fedloom.store import SqlStore, resolve_home
from fedloom.tracking import TrackingSettings, parse_track_flag


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-bin (default: $FEDLOOM_DATA)")
    parser.add_argument("--clients", type=int, default=5, help="number of clients, one IID chunk each (default: 5)")
    parser.add_argument("--rounds", type=int, default=5, help="FedAvg rounds (default: 5)")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of clients per round (default: 1)")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round (default: 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="local batch size (default: 32)")
    parser.add_argument("--lr", type=float, default=0.05, help="client SGD learning rate (default: 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, sampling, init and shuffling")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--home", metavar="DIR", help="store directory (default: $FEDLOOM_HOME or ./fedloom-runs)")
    parser.add_argument(
        "--track",
        default="wandb",
        help="tracking sinks, comma-separated: wandb (offline, no account), tensorboard, mlflow, or none",
    )
    return parser.parse_args()


def lab_config(args: argparse.Namespace) -> SimConfig:
    """The lab's scenario as a SimConfig: the same run ``fedloom sim`` would make from these flags."""
    return SimConfig(
        dataset="cifar10",
        data_dir=args.data_dir,
        model="cifar_cnn",
        clients=args.clients,
        partition="iid",
        fraction=args.fraction,
        rounds=args.rounds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        name="cifar10-lab",
    )


def lab_recording(store: SqlStore, config: SimConfig, track: str) -> Recording:
    """What the run keeps: the store (which ``fedloom ui`` reads) and, as in the lab, W&B in
    offline mode (files under the store's home; ``wandb sync`` uploads them later)."""
    sinks = () if track == "none" else parse_track_flag(track)
    tracking = TrackingSettings(sinks=sinks, wandb_project="cifar10-lab") if sinks else None
    return Recording(store=store, run_name=config.name, config=config.to_dict(), tracking=tracking)


def main() -> None:
    args = parse_args()
    home = resolve_home(args.home)
    try:
        config = lab_config(args)
        with SqlStore.open_default(home) as store:
            observers = [ProgressPrinter(config.rounds)]
            recording = lab_recording(store, config, args.track)
            result = simulate_config(config, store=store, recording=recording, observers=observers)
    except FedloomError as exc:  # e.g. the data is missing: the message says how to get it
        sys.exit(f"cifar10_lab: {exc}")
    print(f"final accuracy: {result.final_metrics['accuracy']:.4f}")
    print(f"run id: {result.run_id}")
    print("watch it:")
    print(f"  fedloom runs show {result.run_id[:8]} --home {home}")
    print(f"  fedloom ui --home {home}")
    if args.track != "none":
        print(f"  tracking files under {home} (docs/tracking.md: wandb sync, tensorboard --logdir, mlflow ui)")
    print(f"  fedloom runs compare {result.run_id[:8]} OTHER_ID --home {home} --plot curves.png")


if __name__ == "__main__":
    main()
