import numpy as np
import pytest

from fedloom.core import DataError
from fedloom.data import ArrayDataset
from fedloom.data.dataset import standardise_pixels


def test_compact_subset_equals_standardised_float():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(20, 1, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 3, size=20).astype(np.int64)
    compact = ArrayDataset(pixels, y, 3, standardise=(0.5, 0.25))
    full = ArrayDataset(standardise_pixels(pixels, 0.5, 0.25), y, 3)
    idx = np.array([3, 0, 7])
    sub = compact.subset(idx)
    assert sub.x.dtype == np.float32 and sub.standardise is None
    np.testing.assert_array_equal(sub.x, full.subset(idx).x)
    np.testing.assert_allclose(sub.x[0], (pixels[3] / 255 - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_array_equal(compact.materialised().x, full.x)
    assert full.materialised() is full


def test_standardise_requires_pixels():
    with pytest.raises(DataError, match="standardise needs uint8 pixels"):
        ArrayDataset(np.zeros((2, 3), np.float32), np.zeros(2, np.int64), 2, standardise=(0.0, 1.0))


@pytest.mark.fmnist
def test_fmnist_compact_matches_float():
    from fedloom.data import load_fashion_mnist
    from fedloom.data.fashion_mnist import resolve_data_dir

    if not (resolve_data_dir() / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST files are not installed")
    compact, full = load_fashion_mnist(compact=True), load_fashion_mnist()
    assert compact.train.x.dtype == np.uint8 and compact.train.x.nbytes == 60000 * 784
    idx = np.arange(0, 60000, 997)
    np.testing.assert_array_equal(compact.train.subset(idx).x, full.train.subset(idx).x)
