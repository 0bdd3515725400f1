"""Bring a folder of images: ``root/<class>/<image>`` -> uint8 pixels, class ids, train-only standardisation.

What it shows:

* the layout fedloom reads: one sub-folder per class (sorted names give the class ids),
  any of jpg / png / bmp / gif / webp, nested folders allowed, other files skipped;
* ``image_size`` resizes every image, ``grayscale`` converts them;
* the pixels stay uint8 in memory and are standardised per channel, with the mean and std
  of the TRAINING images, when a client's subset is taken;
* the same description works for ``fedloom sim --data images:photos`` and a deployed
  ``fedloom agent --data images:/secure/photos``.

Run it (writes a few synthetic images into a temporary folder unless you pass ``--dir``)::

    python examples/images_folder.py
    python examples/images_folder.py --folder ~/my_photos --size 64 64   # your own images
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.data import DataSpec, LoadedData, load_data, parse_data_spec
from fedloom.sim import SimConfig, simulate_config

CLASSES = {"horizontal": 0, "vertical": 1, "diagonal": 2}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="write the demo images here (default: a temporary folder)")
    parser.add_argument("--folder", help="load this image folder instead of the demo one")
    parser.add_argument("--size", type=int, nargs=2, default=[16, 16], metavar=("H", "W"), help="resize to H W")
    parser.add_argument("--grayscale", action="store_true", help="convert the images to one channel")
    parser.add_argument("--per-class", type=int, default=12, help="demo images per class (default: 12)")
    return parser.parse_args()


def write_demo_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """Noisy stripes in three orientations, saved in several formats and sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    formats = ["png", "jpg", "bmp", "webp"]
    for name, orientation in CLASSES.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = int(rng.integers(20, 40))
            rows, cols = np.indices((size, size))
            stripe = [rows, cols, rows + cols][orientation] % 6 < 3
            pixels = np.clip(stripe * 180 + rng.normal(40, 20, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(folder / f"{i}.{formats[i % len(formats)]}")
    (root / "horizontal" / "notes.txt").write_text("files that are not images are skipped and counted")
    return root


def describe(data: LoadedData) -> None:
    train, test = data.splits.train, data.splits.test
    print(f"classes: {', '.join(data.class_names)}")
    print(f"train: x {train.x.shape} {train.x.dtype} (pixels kept compact), y {train.y.shape} {train.y.dtype}")
    print(f"test: x {test.x.shape}, class counts {test.class_counts().tolist()}")
    print(
        f"per-channel mean / std of the training images: {np.round(data.preprocessing['mean'], 3).tolist()} / "
        f"{np.round(data.preprocessing['std'], 3).tolist()}"
    )
    client = train.subset(np.arange(4))
    print(f"a client's subset is standardised: x {client.x.shape} {client.x.dtype}, mean {client.x.mean():.2f}")
    print(f"skipped files: {data.preprocessing['skipped_files']}")


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
    options = {"image_size": args.size, "grayscale": args.grayscale}
    if args.folder:
        describe(load_data(parse_data_spec(f"images:{args.folder}", **options)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = write_demo_folder(Path(args.dir or scratch) / "stripes", args.per_class)
        describe(load_data(parse_data_spec(f"images:{root}", test_fraction=0.25, **options)))
        simulate(parse_data_spec(f"images:{root}", test_fraction=0.25, **options), model="logreg", clients=3, rounds=2)


if __name__ == "__main__":
    main()
