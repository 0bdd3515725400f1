"""The client's compressed upload: residual kept in the state directory across rounds and restarts."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.client.compressed_upload import compressed_upload, residual_store
from fedloom.core import ClientError, from_bytes
from fedloom.core.compression import CompressionSpec, decode_update
from fedloom.core.compression_wire import from_wire

START = {
    "fc.weight": np.zeros((100, 50), dtype=np.float32),
    "bn.num_batches_tracked": np.array(0, dtype=np.int64),
}


def local(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    return {
        "fc.weight": rng.normal(size=(100, 50)).astype(np.float32),
        "bn.num_batches_tracked": np.array(step, dtype=np.int64),
    }


def server_side(body: bytes) -> dict[str, np.ndarray]:
    weights, header = from_bytes(body)
    return decode_update(from_wire(weights, header.extra), START)


def test_residual_is_kept_in_the_state_dir_and_fed_into_the_next_round(tmp_path):
    spec = CompressionSpec("topk", 0.1)
    true_sum = np.zeros((100, 50))
    sent_sum = np.zeros((100, 50))
    for step in range(1, 30):
        upload = compressed_upload(
            local(step), START, spec, client_id="c1", state_dir=tmp_path, round=step, num_samples=5
        )
        assert upload.wire_bytes == len(upload.body) < 0.3 * upload.tensor_bytes
        assert upload.tensor_bytes == 100 * 50 * 4 + 8
        got = server_side(upload.body)
        assert got["bn.num_batches_tracked"].item() == step
        true_sum += local(step)["fc.weight"]
        sent_sum += got["fc.weight"]
    kept = residual_store(tmp_path).load("c1")
    assert set(kept) == {"fc.weight"} and kept["fc.weight"].dtype == np.float64
    # a fresh process reads the same file: the gap is the stored residual, not 29 rounds of dropped entries
    assert np.allclose(true_sum - sent_sum, kept["fc.weight"], atol=1e-4)
    assert (tmp_path / "compression" / "c1.safetensors").exists()


def test_nothing_owed_leaves_no_residual_file(tmp_path):
    start = {"w": np.zeros(3, dtype=np.float32)}
    spec = CompressionSpec("float16")
    small = {"w": np.array([0.1, 0.2, 0.3], dtype=np.float32)}
    compressed_upload(small, start, spec, client_id="c1", state_dir=tmp_path, round=1, num_samples=1)
    assert np.abs(residual_store(tmp_path).load("c1")["w"]).max() > 0
    huge = {"w": np.array([1e6, 0, 0], dtype=np.float32)}  # over half precision's range: sent exact
    compressed_upload(huge, start, spec, client_id="c1", state_dir=tmp_path, round=2, num_samples=1)
    assert residual_store(tmp_path).load("c1") == {}
    assert not (tmp_path / "compression" / "c1.safetensors").exists()


def test_no_state_dir_is_refused():
    with pytest.raises(ClientError, match="state directory"):
        spec = CompressionSpec("int8")
        compressed_upload(local(1), START, spec, client_id="c", state_dir=None, round=1, num_samples=1)
