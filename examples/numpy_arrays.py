"""Bring NumPy arrays: an ``.npz`` file (``arrays:data.npz``) or arrays already in Python.

What it shows:

* the ``.npz`` layout fedloom reads: ``x_train``, ``y_train`` and optionally ``x_test``,
  ``y_test`` (else ``test_fraction`` is held out, stratified and seeded), plus any per-row
  array named by ``by`` for a natural partition; it is read with ``allow_pickle=False``;
* :func:`fedloom.data.from_arrays` for arrays you already hold, with string labels mapped
  to class ids through their sorted values and ``scale="standard"`` fitted on the
  training rows only.

Run it (writes its ``.npz`` into a temporary folder unless you pass ``--dir DIR``)::

    python examples/numpy_arrays.py
    python examples/numpy_arrays.py --npz my_data.npz   # your own file
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.data import DataSpec, LoadedData, from_arrays, load_data, parse_data_spec
from fedloom.sim import SimConfig, simulate_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="write the demo .npz here (default: a temporary folder)")
    parser.add_argument("--npz", help="load this .npz file instead of the demo one")
    return parser.parse_args()


def write_demo_npz(path: Path, seed: int = 0) -> Path:
    """Three Gaussian blobs in 5-D, 40 test rows, and a device id per training row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 5))
    y = rng.integers(0, 3, 200)
    x = centres[y] + rng.normal(0, 1, (200, 5))
    device = np.array([f"device-{i % 4}" for i in range(160)])
    np.savez(path, x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:], device=device)
    return path


def describe(title: str, data: LoadedData) -> None:
    train, test = data.splits.train, data.splits.test
    print(f"{title}: classes {', '.join(data.class_names)}")
    print(f"  train: x {train.x.shape} {train.x.dtype}, y {train.y.shape} {train.y.dtype}; test: x {test.x.shape}")
    if data.groups is not None:
        print(f"  groups: {len(set(data.groups.tolist()))} distinct ids, one per training row")


def simulate(spec: DataSpec, **settings: Any) -> None:
    """A short simulation of this very description: what ``fedloom sim --data KIND:PATH`` runs.

    In a simulation config the natural-partition column is ``partition_by``, not the spec's ``by``.
    """
    data = {key: value for key, value in spec.to_mapping().items() if key != "by"}
    result = simulate_config(SimConfig(data=data, **settings))
    last = result.history[-1]
    print(
        f"simulated {len(result.history)} rounds with {last.num_selected} clients per round:"
        f" accuracy {last.metrics['accuracy']:.3f}, balanced accuracy {last.metrics['balanced_accuracy']:.3f}"
    )


def main() -> None:
    args = parse_args()
    if args.npz:
        describe(args.npz, load_data(parse_data_spec(f"arrays:{args.npz}")))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.dir or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        path = write_demo_npz(folder / "blobs.npz")
        describe("arrays:blobs.npz", load_data(parse_data_spec(f"arrays:{path}", by="device")))
        simulate(parse_data_spec(f"arrays:{path}"), model="logreg", clients=3, rounds=3)
    rng = np.random.default_rng(1)
    x = rng.normal(1000.0, 250.0, (90, 3))
    labels = np.array(["low", "mid", "high"])[rng.integers(0, 3, 90)]
    data = from_arrays(x, labels, scale="standard", test_fraction=0.2, seed=0)
    describe("from_arrays", data)
    x_train = data.splits.train.x
    print(f"  standardised on the training rows: mean {x_train.mean():.3f}, std {x_train.std():.3f}")


if __name__ == "__main__":
    main()
