"""The image-folder loader: ``root/<class>/<image>`` -> uint8 pixels ``(n, C, H, W)`` and class ids.

Class ids follow the sorted sub-folder names. Images are decoded with Pillow (the
``images`` extra), converted to RGB or grayscale, and resized to ``image_size``. Pixels stay
uint8 (4x less memory than float32) and are standardised per channel when a subset is
taken (:class:`ArrayDataset.standardise`), with the mean and std of the TRAINING images.

Files that are not images by their suffix (``notes.txt``, ``Thumbs.db``, hidden files such as
``.DS_Store``) are skipped, counted in one log line and in the preprocessing record: such
files are routine in exported folders and refusing them would only make users delete them.
A file with an image suffix that does not decode is an error naming the file, and so is a
class folder with no image at all: a silently missing class would shift every class id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.core.errors import DataError
from fedloom.data.dataset import ArrayDataset, DatasetSplits
from fedloom.data.digits import stratified_split
from fedloom.data.extras import require
from fedloom.data.loaded import LoadedData
from fedloom.data.spec import DataSpec

log = logging.getLogger("fedloom.data")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class _Folder:
    """The image files of a class folder tree, their class ids, and what was skipped."""

    files: tuple[Path, ...]
    labels: np.ndarray
    skipped: int


def load_image_folder(spec: DataSpec) -> LoadedData:
    """Load ``spec.path`` (one sub-folder per class), and ``spec.test_path`` if given."""
    require("PIL", "images", "image folders")
    root = Path(spec.path).expanduser()
    class_names = _classes(root, spec.classes)
    folder = scan_folder(root, class_names, allow_missing=spec.classes is not None)
    if not folder.files:
        raise DataError(f"{root}: none of the class folders {list(class_names)} holds an image")
    resize = spec.image_size is not None
    pixels = decode_files(folder.files, spec.image_size, spec.grayscale, resize=resize)
    if spec.test_path is None:
        train_idx, test_idx = stratified_split(folder.labels, spec.test_fraction, spec.seed)
        train = (pixels[train_idx], folder.labels[train_idx])
        test = (pixels[test_idx], folder.labels[test_idx])
        skipped = folder.skipped
    else:
        test_root = Path(spec.test_path).expanduser()
        _classes(test_root, class_names)
        held = scan_folder(test_root, class_names, allow_missing=True)
        size = spec.image_size or _size_of(pixels)
        test = (decode_files(held.files, size, spec.grayscale, resize=resize), held.labels)
        train, skipped = (pixels, folder.labels), folder.skipped + held.skipped
    return pixels_to_loaded(spec, train, test, class_names, str(root), {"skipped_files": skipped})


def pixels_to_loaded(
    spec: DataSpec,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    source: str,
    extra: dict[str, Any],
) -> LoadedData:
    """uint8 ``(n, C, H, W)`` train/test pixels and ids -> :class:`LoadedData`, scaled on train only."""
    mean, std = fit_pixel_scale(train[0], spec.scaling)
    k = len(class_names)
    splits = DatasetSplits(
        name=Path(source).name or "images",
        train=ArrayDataset(train[0], train[1], k, standardise=(mean, std)),
        test=ArrayDataset(test[0], test[1], k, standardise=(mean, std)),
    )
    record: dict[str, Any] = {
        "kind": spec.kind,
        "source": source,
        "classes": list(class_names),
        "image_size": list(train[0].shape[2:]),
        "channels": int(train[0].shape[1]),
        "scale": spec.scaling,
        "mean": list(mean),
        "std": list(std),
        "rows": {"train": len(train[1]), "test": len(test[1])},
        **extra,
    }
    return LoadedData(splits, None, (), class_names, record)


def class_folders(root: Path) -> tuple[str, ...]:
    """The sorted class sub-folder names of ``root`` (hidden folders are not classes)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder (fedloom reads local folders only, never downloads)")
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not names:
        raise DataError(f"{root}: no class sub-folders; put each class's images in root/<class name>/")
    return names


def _classes(root: Path, fixed: tuple[str, ...] | None) -> tuple[str, ...]:
    """The class names: ``fixed`` (the spec's ``classes``) or the sorted folder names.

    With fixed classes a site that lacks a class's folder keeps the same class ids as its
    neighbours; a folder that is not one of them is refused, as it would have no id.
    """
    found = class_folders(root)
    if fixed is None:
        return found
    stray = [name for name in found if name not in fixed]
    if stray:
        raise DataError(f"{root}: class folder(s) {', '.join(stray)} are not among the classes {list(fixed)}")
    return fixed


def scan_folder(root: Path, class_names: Sequence[str], *, allow_missing: bool = False) -> _Folder:
    """Every image file under each class folder (recursively, sorted); others are counted as skipped.

    ``allow_missing``: a class may have no folder (a test folder, or fixed ``classes``); an
    existing class folder without any image is always an error.
    """
    files: list[Path] = []
    labels: list[int] = []
    skipped = sum(1 for p in root.iterdir() if not p.is_dir())
    for class_id, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            if not allow_missing:
                raise DataError(f"{folder}: no such class folder")
            continue
        found = 0
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if hidden or path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped += 1
                continue
            files.append(path)
            labels.append(class_id)
            found += 1
        if found == 0:
            raise DataError(
                f"{folder}: class folder holds no image ({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder"
            )
    if skipped:
        log.info("%s: skipped %d file(s) that are not images (by suffix) or are hidden", root, skipped)
    return _Folder(tuple(files), np.asarray(labels, dtype=np.int64), skipped)


def decode_files(files: Sequence[Path], size: tuple[int, int] | None, grayscale: bool, *, resize: bool) -> np.ndarray:
    """Decode image files into uint8 ``(n, C, H, W)``; an unreadable one is a DataError naming it.

    ``resize``: resize every image to ``size``; else every image must be ``size`` already
    (``None``: the first image's), and one that is not names the file and the fix.
    """
    from PIL import Image

    arrays: list[np.ndarray] = []
    for file in files:
        try:
            with Image.open(file) as image:
                pixels = image_pixels(image, size if resize else None, grayscale)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{file}: not a readable image ({exc}); replace or remove the file") from exc
        expected = size or _first_size(arrays)
        if expected is not None and pixels.shape[1:] != expected:
            raise DataError(
                f"{file}: image is {pixels.shape[1]}x{pixels.shape[2]} (HxW), the others {expected[0]}x{expected[1]}; "
                "set image_size = [HEIGHT, WIDTH] to resize them all"
            )
        arrays.append(pixels)
    if not arrays:
        return np.zeros((0, 1 if grayscale else 3, *(size or (1, 1))), dtype=np.uint8)
    return np.stack(arrays)


def image_pixels(image: Any, size: tuple[int, int] | None, grayscale: bool) -> np.ndarray:
    """A PIL image -> uint8 ``(C, H, W)`` in RGB or grayscale, resized to ``size`` ``(H, W)`` if given."""
    from PIL import Image

    if image.mode.startswith("I"):
        image = _sixteen_to_eight_bits(image)
    elif image.mode == "F":
        raise ValueError("32-bit float images are not supported; save them as 8- or 16-bit images")
    elif image.mode in ("P", "PA", "LA"):
        image = image.convert("RGBA")  # palettes with transparency go through RGBA first
    image = image.convert("L" if grayscale else "RGB")
    if size is not None and (image.height, image.width) != size:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None, :, :] if grayscale else pixels.transpose(2, 0, 1)


def _sixteen_to_eight_bits(image: Any) -> Any:
    """A 16-bit gray image (mode ``I;16``/``I``) as 8-bit: ``value / 257``, since Pillow would clip at 255."""
    from PIL import Image

    deep = np.asarray(image)
    if deep.size and (int(deep.min()) < 0 or int(deep.max()) > 65535):
        raise ValueError("pixel values outside 0..65535; save the image with 8 or 16 bits per pixel")
    return Image.fromarray(np.rint(deep.astype(np.float64) / 257.0).astype(np.uint8))  # 2-D uint8: mode L


def fit_pixel_scale(pixels: np.ndarray, scale: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` of the training pixels in [0, 1] (``standard``), else fixed constants.

    ``minmax`` maps pixels to [0, 1]; ``none`` keeps the raw 0..255 values as floats.
    """
    channels = pixels.shape[1]
    if scale == "minmax":
        return (0.0,) * channels, (1.0,) * channels
    if scale == "none":
        return (0.0,) * channels, (1.0 / 255.0,) * channels
    means: list[float] = []
    stds: list[float] = []
    for channel in range(channels):
        values = pixels[:, channel]
        mean = float(values.mean(dtype=np.float64)) / 255.0 if values.size else 0.0
        std = float(values.std(dtype=np.float64)) / 255.0 if values.size else 0.0
        means.append(mean)
        stds.append(std if std > 0.0 else 1.0)  # a constant channel is only shifted
    return tuple(means), tuple(stds)


def _first_size(arrays: list[np.ndarray]) -> tuple[int, int] | None:
    return None if not arrays else (int(arrays[0].shape[1]), int(arrays[0].shape[2]))


def _size_of(pixels: np.ndarray) -> tuple[int, int]:
    return int(pixels.shape[2]), int(pixels.shape[3])
