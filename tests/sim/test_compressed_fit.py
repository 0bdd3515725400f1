"""Simulation's fit path under compression: the update is what the aggregator would decode, bytes reported."""

from __future__ import annotations

import numpy as np

from fedloom.client.compressed_upload import TENSOR_BYTES_METRIC, WIRE_BYTES_METRIC, residual_store
from fedloom.core.compression import CompressionSpec, spec_to_extra
from fedloom.core.fit import FitConfig, FitResult
from fedloom.sim.executor import fit_one

GLOBAL = {"w": np.zeros((50, 40), dtype=np.float32), "bn.num_batches_tracked": np.array(4, dtype=np.int64)}


class Stepper:
    """Moves every weight by a fixed pattern, so the test knows the true local model."""

    def fit(self, weights, config):
        rng = np.random.default_rng(config.round)
        out = {"w": (weights["w"] + rng.normal(size=(50, 40))).astype(np.float32)}
        out["bn.num_batches_tracked"] = np.asarray(weights["bn.num_batches_tracked"] + 1)
        return FitResult(out, 10, {"loss": 1.0})

    def evaluate(self, weights, config):  # pragma: no cover - not used
        raise NotImplementedError


def test_compressed_fit_sends_the_decoded_model_and_reports_bytes(tmp_path):
    config = FitConfig(round=1, extra={"compression": spec_to_extra(CompressionSpec("topk", 0.1))})
    update = fit_one(lambda _: Stepper(), "3", GLOBAL, config, str(tmp_path))
    trained = Stepper().fit(GLOBAL, config).weights["w"]
    assert np.count_nonzero(update.weights["w"]) == 200  # 10% of 2000 entries
    kept = np.flatnonzero(update.weights["w"])
    assert np.array_equal(update.weights["w"].ravel()[kept], trained.ravel()[kept])
    assert update.weights["bn.num_batches_tracked"].item() == 5
    assert update.metrics["loss"] == 1.0
    assert update.metrics[TENSOR_BYTES_METRIC] == 50 * 40 * 4 + 8
    assert 200 * 8 < update.metrics[WIRE_BYTES_METRIC] < 0.3 * update.metrics[TENSOR_BYTES_METRIC]
    assert set(residual_store(tmp_path).load("3")) == {"w"}


def test_a_run_without_compression_is_unchanged(tmp_path):
    update = fit_one(lambda _: Stepper(), "3", GLOBAL, FitConfig(round=1), str(tmp_path))
    assert np.array_equal(update.weights["w"], Stepper().fit(GLOBAL, FitConfig(round=1)).weights["w"])
    assert set(update.metrics) == {"loss"}
    assert not (tmp_path / "compression").exists()
