"""CIFAR-10 binary batches: exact pixel layout, labels, normalisation, bad files, missing files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cifar10_files import batch_bytes, write_fake_cifar10

from fedloom.core.errors import DataError
from fedloom.data import ArrayDataset, load_cifar10, load_dataset
from fedloom.data import cifar10 as c10
from fedloom.data.dataset import standardise_pixels


def test_record_layout_is_label_then_red_green_blue_planes_row_major(tmp_path: Path) -> None:
    record = bytearray(3073 * 2)
    record[0] = 7  # label of image 0
    record[1 + 0 * 1024 + 3 * 32 + 5] = 11  # image 0, red,   row 3,  col 5
    record[1 + 1 * 1024 + 31 * 32 + 0] = 22  # image 0, green, row 31, col 0
    record[1 + 2 * 1024 + 0 * 32 + 31] = 33  # image 0, blue,  row 0,  col 31
    record[3073] = 2  # label of image 1
    record[3073 + 1 + 2 * 1024 + 10 * 32 + 20] = 255  # image 1, blue, row 10, col 20
    path = tmp_path / "one.bin"
    path.write_bytes(bytes(record))
    images, labels = c10.read_batch(path)
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [7, 2])
    assert images[0, 0, 3, 5] == 11 and images[0, 1, 31, 0] == 22 and images[0, 2, 0, 31] == 33
    assert images[1, 2, 10, 20] == 255
    assert int(images.sum()) == 11 + 22 + 33 + 255  # nothing else is set: no byte is misplaced
    assert not images.flags.writeable


def test_load_normalises_per_channel_and_keeps_every_record(tmp_path: Path) -> None:
    folder = write_fake_cifar10(tmp_path, per_batch=50)
    data = load_cifar10(tmp_path)
    assert data.name == "cifar10" and data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert len(data.train) == 250 and len(data.test) == 50
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int64
    raw = np.fromfile(folder / "data_batch_3.bin", dtype=np.uint8).reshape(50, 3073)
    np.testing.assert_array_equal(data.train.y[100:150], raw[:, 0])
    pixels = raw[:, 1:].reshape(50, 3, 32, 32).astype(np.float64) / 255.0
    mean, std = np.array(c10.MEAN)[:, None, None], np.array(c10.STD)[:, None, None]
    np.testing.assert_allclose(data.train.x[100:150], (pixels - mean) / std, rtol=1e-5, atol=1e-5)
    # a pure-red pixel: (1 - 0.4914) / 0.2470, (0 - 0.4822) / 0.2435, (0 - 0.4465) / 0.2616
    assert c10.MEAN == (0.4914, 0.4822, 0.4465) and c10.STD == (0.2470, 0.2435, 0.2616)


def test_compact_subsets_equal_the_float_arrays(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, per_batch=20)
    compact, full = load_cifar10(tmp_path, compact=True), load_cifar10(tmp_path)
    assert compact.train.x.dtype == np.uint8 and compact.train.standardise == (c10.MEAN, c10.STD)
    idx = np.array([0, 57, 99])
    np.testing.assert_array_equal(compact.train.subset(idx).x, full.train.x[idx])
    np.testing.assert_array_equal(compact.test.materialised().x, full.test.x)


def test_per_channel_standardise_on_known_pixels() -> None:
    pixels = np.zeros((1, 3, 1, 2), dtype=np.uint8)
    pixels[0, :, 0, 0] = 255
    x = standardise_pixels(pixels, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 3.0, 1.0])
    np.testing.assert_allclose(x[0, :, 0, 1], [-1.0, -1.0, 0.0])
    with pytest.raises(DataError, match="2 per-channel values but x of shape"):
        ArrayDataset(pixels, np.zeros(1, np.int64), 2, standardise=((0.5, 0.5), 0.5))


def test_fresh_arrays_on_every_call(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, per_batch=10)
    first = load_cifar10(tmp_path)
    first.train.x[:] = 0
    assert load_cifar10(tmp_path).train.x.any()


@pytest.mark.parametrize("size", [3072, 3073 * 2 + 1, 0])
def test_size_not_a_multiple_of_a_record_names_the_file(tmp_path: Path, size: int) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(bytes(size))
    with pytest.raises(DataError, match=rf"data_batch_1\.bin: {size} bytes is not a positive multiple of 3073"):
        c10.read_batch(path)


def test_label_outside_0_9_names_the_file_and_record(tmp_path: Path) -> None:
    labels = np.array([3, 9, 10, 1])
    path = tmp_path / "test_batch.bin"
    path.write_bytes(batch_bytes(np.zeros((4, 3, 32, 32), np.uint8), labels))
    with pytest.raises(DataError, match=r"test_batch\.bin: record 2 has label 10, outside \[0, 10\)"):
        c10.read_batch(path)


def test_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "data_batch_1.bin" in message and "test_batch.bin" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message
    assert f"tar xzf cifar-10-binary.tar.gz -C {tmp_path}" in message
    assert "--data-dir" in message and "FEDLOOM_DATA" in message and "never downloads" in message


def test_one_missing_batch_is_named(tmp_path: Path) -> None:
    folder = write_fake_cifar10(tmp_path, per_batch=5)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match=r"missing: data_batch_4\.bin\)"):
        load_cifar10(folder)


def test_folder_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_fake_cifar10(tmp_path, per_batch=5)
    monkeypatch.setenv("FEDLOOM_DATA", str(tmp_path))
    assert c10.resolve_data_dir() == folder  # the root holding cifar-10-batches-bin
    assert c10.resolve_data_dir(folder) == folder  # the unpacked folder itself
    monkeypatch.delenv("FEDLOOM_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert c10.resolve_data_dir() == tmp_path / "home" / "fedloom-data"
    assert len(load_dataset("cifar-10", tmp_path).train) == 25
    assert load_dataset("CIFAR10", folder, compact=True).train.x.dtype == np.uint8
