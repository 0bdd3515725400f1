"""A simulated run in MLflow, read back with ``MlflowClient`` from a real ``mlflow server``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tracking_helpers import ROUNDS, run_tracked

from fedloom.core.serialization import from_bytes
from fedloom.tracking import TrackingSettings

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")


def _only_run(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([found.experiment_id])
    return run


def test_a_run_logged_to_a_server_holds_the_stores_values(tmp_path, mlflow_server):
    settings = TrackingSettings(sinks=("mlflow",), mlflow_tracking_uri=mlflow_server, mlflow_experiment="sim-test")
    store, run_id = run_tracked(tmp_path / "home", settings)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = _only_run(client, "sim-test")
    assert run.info.status == "FINISHED"
    assert run.data.tags["fedloom.run_id"] == run_id
    assert run.data.params["rounds"] == "3" and run.data.params["strategy.name"] == "fedavg"

    for metric in store.metrics(run_id, scope="server"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"server/{metric.name}")}
        assert history[metric.round] == metric.value  # MLflow keeps doubles: exact
    for model in store.list_local_models(run_id):
        for name, value in model.metrics.items():
            history = client.get_metric_history(run.info.run_id, f"client/{model.client_id}/{name}")
            assert {m.step: m.value for m in history}[model.round] == value
    selected = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "participation/contributed")}
    assert selected == {r.round: r.num_updates for r in store.list_rounds(run_id)}

    folder = client.download_artifacts(run.info.run_id, "global_model.safetensors", str(tmp_path / "download"))
    weights, _ = from_bytes(Path(folder).read_bytes())
    final = store.load_global_model(run_id, ROUNDS)
    assert all((weights[k] == final[k]).all() for k in final) and weights.keys() == final.keys()


def test_the_default_store_is_a_local_sqlite_file_under_the_home(tmp_path):
    """No URI given: ``<home>/mlflow/mlflow.db`` (pytest turns any MLflow warning into a failure)."""
    store, run_id = run_tracked(tmp_path / "home", TrackingSettings(sinks=("mlflow",)))
    database = tmp_path / "home" / "mlflow" / "mlflow.db"
    assert database.is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}")
    run = _only_run(client, "fedloom")
    (accuracy,) = [m for m in store.metrics(run_id, scope="server") if m.name == "accuracy" and m.round == ROUNDS]
    assert run.data.metrics["server/accuracy"] == accuracy.value
    assert (tmp_path / "home" / "mlflow" / "artifacts").is_dir()
