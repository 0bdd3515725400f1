"""A simulated run in a W&B offline run file, read back with wandb's own record protobuf."""

from __future__ import annotations

import pytest

pytest.importorskip("wandb", reason="the wandb extra is not installed")

import wandb_records
from tracking_helpers import ROUNDS, run_tracked

from fedloom.core.errors import ConfigError
from fedloom.tracking import TrackingSettings
from fedloom.tracking.wandb_sink import WandbSink


def test_the_offline_run_holds_the_stores_values(tmp_path):
    store, run_id = run_tracked(tmp_path / "home", TrackingSettings(sinks=("wandb",)))
    (path,) = (tmp_path / "home" / "wandb").glob("offline-run-*/run-*.wandb")
    wandb_records.wait_for_exit(path)
    history = wandb_records.history(path)
    assert sorted(history) == list(range(1, ROUNDS + 1))
    for metric in store.metrics(run_id, scope="server"):
        assert history[metric.round][f"server/{metric.name}"] == metric.value
    for model in store.list_local_models(run_id):
        for name, value in model.metrics.items():
            assert history[model.round][f"client/{model.client_id}/{name}"] == value
    for row in store.list_rounds(run_id):
        assert history[row.round]["participation/num_samples"] == row.num_samples
    config = wandb_records.config(path)
    assert config["rounds"] == "3" and config["strategy.name"] == "fedavg"
    assert wandb_records.artifact_files(path) == [("global_model", "global_model.safetensors")]


def test_online_mode_needs_an_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        WandbSink(tmp_path, mode="online")
    with pytest.raises(ConfigError, match="wandb_mode must be one of"):
        WandbSink(tmp_path, mode="cloud")
