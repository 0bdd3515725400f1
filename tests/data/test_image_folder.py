"""The image-folder loader on small folders of images written here with Pillow."""

import logging

import numpy as np
import pytest

from fedloom.core.errors import DataError
from fedloom.data import load_data, parse_data_spec

Image = pytest.importorskip("PIL.Image")


def write_image(path, value, size=(6, 4), mode="RGB", fmt=None):
    """A solid image of ``value`` (per channel for RGB), ``size`` as (H, W)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(np.broadcast_to(np.asarray(value, dtype=np.uint8), shape).copy(), mode=mode).save(path, fmt)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "cat" / "a.png", (10, 20, 30))
    write_image(root / "cat" / "b.jpg", (10, 20, 30))  # flat colours survive JPEG exactly
    write_image(root / "dog" / "c.bmp", (200, 100, 50))
    write_image(root / "dog" / "sub" / "d.webp", (200, 100, 50))
    write_image(root / "emu" / "E.GIF", (0, 0, 0), fmt="GIF")  # suffixes in any case
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("the photos")
    return root


def load(path, **options):
    return load_data(parse_data_spec(f"images:{path}", **options))


def test_classes_shapes_and_train_only_standardisation(folder, caplog):
    with caplog.at_level(logging.INFO, logger="fedloom.data"):
        data = load(folder, test_fraction=0)
    assert "skipped 3 file(s)" in caplog.text
    assert data.class_names == ("cat", "dog", "emu")
    train = data.splits.train
    assert train.x.dtype == np.uint8 and train.x.shape == (5, 3, 6, 4)
    np.testing.assert_array_equal(train.y, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(train.x[2, :, 0, 0], [200, 100, 50])
    pixels = train.x.astype(np.float64) / 255
    mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    np.testing.assert_allclose(data.preprocessing["mean"], mean)
    np.testing.assert_allclose(data.preprocessing["std"], std)
    assert data.preprocessing["skipped_files"] == 3
    features = train.materialised().x
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, (pixels - mean[:, None, None]) / std[:, None, None], rtol=1e-5, atol=1e-6)


def test_resize_grayscale_and_scales(folder):
    data = load(folder, image_size=[3, 5], grayscale=True, scale="minmax", test_fraction=0)
    assert data.splits.train.x.shape == (5, 1, 3, 5)
    gray = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert abs(int(data.splits.train.x[2, 0, 1, 2]) - gray) <= 1
    np.testing.assert_allclose(data.splits.train.materialised().x, data.splits.train.x / 255, rtol=1e-6)
    raw = load(folder, grayscale=True, scale="none", test_fraction=0)
    np.testing.assert_allclose(raw.splits.train.materialised().x, raw.splits.train.x, rtol=1e-6)


def test_test_folder_is_scaled_with_the_train_statistics(folder, tmp_path):
    held = tmp_path / "held"
    write_image(held / "dog" / "x.png", (255, 255, 255))
    data = load(folder, test_path=str(held))
    assert len(data.splits.train) == 5
    np.testing.assert_array_equal(data.splits.test.y, [1])
    without = load(folder, test_fraction=0)
    assert data.preprocessing["mean"] == without.preprocessing["mean"]  # the white test image changes nothing
    stray = tmp_path / "stray"
    write_image(stray / "yak" / "y.png", 1)
    with pytest.raises(
        DataError, match=r"stray: class folder\(s\) yak are not among the classes \['cat', 'dog', 'emu'\]"
    ):
        load(folder, test_path=str(stray))


def test_fixed_classes_keep_the_ids_of_a_site_that_lacks_a_class(folder):
    data = load(folder, classes=["ant", "cat", "dog", "emu"], test_fraction=0)
    assert data.splits.num_classes == 4 and data.class_names == ("ant", "cat", "dog", "emu")
    np.testing.assert_array_equal(data.splits.train.y, [1, 1, 2, 2, 3])
    with pytest.raises(DataError, match=r"class folder\(s\) emu are not among the classes \['cat', 'dog'\]"):
        load(folder, classes=["cat", "dog"])


def test_held_out_fraction_is_stratified_and_seeded(tmp_path):
    root = tmp_path / "p"
    for c in range(2):
        for i in range(10):
            write_image(root / f"c{c}" / f"{i}.png", (i * 20, c * 100, 0))
    a = load(root, test_fraction=0.2, seed=4)
    b = load(root, test_fraction=0.2, seed=4)
    np.testing.assert_array_equal(a.splits.test.x, b.splits.test.x)
    np.testing.assert_array_equal(a.splits.test.class_counts(), [2, 2])
    pixels = a.splits.train.x.astype(np.float64) / 255
    np.testing.assert_allclose(a.preprocessing["mean"], pixels.mean(axis=(0, 2, 3)))


def test_bad_image_names_the_file(folder):
    good = (folder / "cat" / "a.png").read_bytes()
    (folder / "cat" / "broken.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cat/broken\.png: not a readable image"):
        load(folder)
    (folder / "cat" / "broken.png").write_bytes(b"garbage, not a png")
    with pytest.raises(DataError, match=r"cat/broken\.png: not a readable image"):
        load(folder)


def test_empty_class_folder_names_it(folder):
    (folder / "yak").mkdir()
    (folder / "yak" / "list.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"photos/yak: class folder holds no image \(.jpg, .jpeg, .png"):
        load(folder)


def test_mixed_sizes_need_image_size(folder):
    write_image(folder / "emu" / "big.png", 0, size=(8, 8))
    with pytest.raises(DataError, match=r"emu/big\.png: image is 8x8 \(HxW\), the others 6x4; set image_size"):
        load(folder)
    assert load(folder, image_size=[6, 4]).splits.input_shape == (3, 6, 4)


def test_palette_gray_and_rgba_images_convert(tmp_path):
    root = tmp_path / "modes"
    write_image(root / "a" / "gray.png", 77, mode="L")
    rgba = Image.fromarray(np.full((6, 4, 4), 90, dtype=np.uint8), mode="RGBA")
    rgba.save(root / "a" / "rgba.png")
    (root / "b").mkdir()
    rgba.convert("P").save(root / "b" / "pal.png", transparency=0)  # a palette with a transparent index
    data = load(root, test_fraction=0)
    assert data.splits.train.x.shape == (3, 3, 6, 4)
    np.testing.assert_array_equal(data.splits.train.x[0, :, 0, 0], [77, 77, 77])


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    root = tmp_path / "scans"
    (root / "a").mkdir(parents=True)
    deep = np.array([[0, 257 * 100], [65535, 257 * 3]], dtype=np.uint16)  # as a 16-bit scanner writes them
    Image.fromarray(deep).save(root / "a" / "deep.png")
    data = load(root, grayscale=True, test_fraction=0)
    np.testing.assert_array_equal(data.splits.train.x[0, 0], [[0, 100], [255, 3]])
    (root / "b").mkdir()
    Image.fromarray(np.ones((2, 2), dtype=np.float32)).save(root / "b" / "float.tiff")
    (root / "b" / "float.tiff").rename(root / "b" / "float.png")  # a float image behind an image suffix
    with pytest.raises(DataError, match=r"float\.png: not a readable image"):
        load(root, grayscale=True)


def test_missing_pillow_names_the_extra(folder, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PIL" else real(name, *a))
    with pytest.raises(DataError, match=r"image folders needs the PIL package.*pip install 'fedloom\[images\]'"):
        load(folder)


def test_missing_root_and_no_class_folders(tmp_path):
    with pytest.raises(DataError, match="no such image folder"):
        load(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.png", 1)
    with pytest.raises(DataError, match="no class sub-folders"):
        load(tmp_path / "flat")
