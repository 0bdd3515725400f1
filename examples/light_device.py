"""A light device's trainer factory: NumPy only, for ``fedloom-light --trainer examples/light_device.py:make_trainer``.

The device's data is an ``.npz`` file with arrays ``x`` (samples x features) and ``y``
(integer labels), read without pickle. On a laptop, write demo files from the digits data
(this needs scikit-learn; the device itself does not):

    python examples/light_device.py --write-demo-data demo-devices --devices 4

then run a device with ``--trainer-arg data=demo-devices/device-0.npz``.
examples/edge_federation.md runs four of them under two edge aggregators.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fedloom.light import LightLogisticTrainer

CLASSES = 10


def make_trainer(data: str, num_classes: str = str(CLASSES)) -> LightLogisticTrainer:
    """The softmax regression trainer over this device's ``data`` file."""
    with np.load(data, allow_pickle=False) as arrays:
        x, y = arrays["x"], arrays["y"]
    return LightLogisticTrainer(x, y, int(num_classes))


def write_demo_data(folder: Path, devices: int, seed: int = 0) -> None:
    """Split the digits training set into ``devices`` IID shares, one ``device-K.npz`` each."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32) / 16.0, digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    folder.mkdir(parents=True, exist_ok=True)
    for k, share in enumerate(np.array_split(order, devices)):
        np.savez(folder / f"device-{k}.npz", x=x[share], y=y[share])
        print(f"{folder / f'device-{k}.npz'}: {len(share)} samples")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-demo-data", metavar="DIR", required=True, help="where to write device-K.npz")
    parser.add_argument("--devices", type=int, default=4)
    args = parser.parse_args()
    write_demo_data(Path(args.write_demo_data), args.devices)
