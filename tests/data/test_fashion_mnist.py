import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fedloom.core.errors import DataError
from fedloom.data import fashion_mnist as fm
from fedloom.data import load_dataset, load_fashion_mnist


def write_idx(path: Path, magic: int, dims: tuple[int, ...], body: bytes) -> Path:
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">i", magic) + struct.pack(f">{len(dims)}i", *dims) + body)
    return path


def write_fake_fmnist(folder: Path, n_train=4, n_test=3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = (np.arange(n * 28 * 28) % 256).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051, (n, 28, 28), images.tobytes())
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049, (n,), labels.tobytes())
    return folder


def test_read_idx_parses_exactly(tmp_path):
    body = (np.arange(2 * 28 * 28) % 251).astype(np.uint8).tobytes()
    images = fm.read_idx(write_idx(tmp_path / "i.gz", 2051, (2, 28, 28), body), 2051)
    assert images.shape == (2, 28, 28)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images.ravel(), np.arange(2 * 28 * 28) % 251)
    labels = fm.read_idx(write_idx(tmp_path / "l.gz", 2049, (5,), bytes([3, 1, 4, 1, 5])), 2049)
    np.testing.assert_array_equal(labels, [3, 1, 4, 1, 5])


def test_read_idx_bad_magic_names_file(tmp_path):
    path = write_idx(tmp_path / "bad-magic.gz", 2049, (3,), bytes(3))
    with pytest.raises(DataError, match=r"bad-magic\.gz.*magic number 2049, expected 2051"):
        fm.read_idx(path, 2051)


@pytest.mark.parametrize(("body_len", "word"), [(4, "body has 4 bytes"), (7, "body has 7 bytes")])
def test_read_idx_wrong_body_size_names_file(tmp_path, body_len, word):
    path = write_idx(tmp_path / "sized.gz", 2049, (5,), bytes(body_len))
    with pytest.raises(DataError, match=rf"sized\.gz.*{word}"):
        fm.read_idx(path, 2049)


def test_read_idx_truncated_header_and_not_gzip(tmp_path):
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as handle:
        handle.write(struct.pack(">i", 2051) + struct.pack(">i", 2))
    with pytest.raises(DataError, match=r"short\.gz.*truncated IDX header"):
        fm.read_idx(short, 2051)
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"plain\.gz.*gzip"):
        fm.read_idx(plain, 2051)


def test_missing_dir_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FEDLOOM_DATA" in message
    assert "--data-dir" in message
    assert "train-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "nowhere") in message


def test_env_var_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDLOOM_DATA", raising=False)
    assert fm.resolve_data_dir() == Path("/usr/share/datasets/fashion-mnist")
    monkeypatch.setenv("FEDLOOM_DATA", str(tmp_path))
    assert fm.resolve_data_dir() == tmp_path
    (tmp_path / "fashion-mnist").mkdir()
    assert fm.resolve_data_dir() == tmp_path / "fashion-mnist"
    other = tmp_path / "other"
    assert fm.resolve_data_dir(other) == other


def test_load_synthetic_files_via_env(tmp_path, monkeypatch):
    write_fake_fmnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("FEDLOOM_DATA", str(tmp_path))
    splits = load_fashion_mnist()
    assert splits.name == "fmnist"
    assert splits.train.x.shape == (4, 1, 28, 28)
    assert splits.test.x.shape == (3, 1, 28, 28)
    assert splits.train.x.dtype == np.float32
    assert splits.train.y.dtype == np.int64
    np.testing.assert_array_equal(splits.test.y, [0, 1, 2])
    low, high = (0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530
    assert splits.train.x.min() == pytest.approx(low, abs=1e-6)
    assert splits.train.x.max() == pytest.approx(high, abs=1e-6)
    assert splits.train.x[0, 0, 0, 1] == pytest.approx((1 / 255 - 0.2860) / 0.3530, abs=1e-6)


def test_load_returns_fresh_arrays(tmp_path):
    folder = write_fake_fmnist(tmp_path / "d")
    first = load_fashion_mnist(folder)
    first.train.x[:] = 0
    second = load_fashion_mnist(folder)
    assert second.train.x.max() > 0


def test_image_label_count_mismatch(tmp_path):
    folder = write_fake_fmnist(tmp_path / "d")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", 2049, (2,), bytes(2))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_fashion_mnist(folder)


def test_label_out_of_range(tmp_path):
    folder = write_fake_fmnist(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte.gz", 2049, (4,), bytes([0, 1, 10, 2]))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz.*label 10"):
        load_fashion_mnist(folder)


def test_load_dataset_alias(tmp_path):
    folder = write_fake_fmnist(tmp_path / "d")
    assert len(load_dataset("fashion-mnist", folder).train) == 4
    assert len(load_dataset("fmnist", str(folder)).test) == 3


REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.fmnist
@pytest.mark.skipif(not (REAL_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST files absent")
def test_real_fashion_mnist():
    splits = load_fashion_mnist(REAL_DIR)
    assert splits.train.x.shape == (60000, 1, 28, 28)
    assert splits.test.x.shape == (10000, 1, 28, 28)
    assert splits.train.x.dtype == np.float32
    assert splits.train.y.dtype == np.int64
    np.testing.assert_array_equal(splits.train.class_counts(), [6000] * 10)
    np.testing.assert_array_equal(splits.test.class_counts(), [1000] * 10)
    assert abs(float(splits.train.x.mean())) < 0.01
    assert float(splits.train.x.std()) == pytest.approx(1.0, abs=0.01)
