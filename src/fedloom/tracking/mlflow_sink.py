"""MLflow: one MLflow run per fedloom run, through ``MlflowClient`` (no global fluent state).

The default tracking URI is a SQLite file under the fedloom home (MLflow 3 deprecates its
plain-file store), with artifacts in a folder next to it; ``mlflow_tracking_uri`` points at
a server (``http://host:5000``) or any other store MLflow accepts.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fedloom.tracking.sink import MODEL_ARTIFACT, require

#: MLflow's limits per ``log_batch`` call
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100
#: MLflow refuses longer parameter values
_MAX_PARAM_LENGTH = 6000
_STATUSES = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def default_tracking_uri(home: Path | str) -> str:
    """``sqlite:///<home>/mlflow/mlflow.db``, the local store MLflow 3 supports without warnings."""
    root = Path(home).resolve() / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's local SQLAlchemy store uses a loader SQLAlchemy 2.1 deprecates: the warning is
    MLflow's to fix, raised once, when its store module loads and its mappers are configured."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class MlflowSink:
    """Logs to experiment ``experiment`` (created if missing) at ``tracking_uri``."""

    name = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str = "fedloom", artifact_root: Path | str | None = None) -> None:
        self._mlflow = require("mlflow", "mlflow")
        self._entities = require("mlflow.entities", "mlflow")
        with _quiet_mlflow():
            self.client: Any = self._mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment
        self.artifact_root = None if artifact_root is None else Path(artifact_root).resolve().as_uri()
        self.mlflow_run_id: str | None = None

    def start(self, run_id: str, run_name: str, params: Mapping[str, str]) -> None:
        with _quiet_mlflow():
            found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(self.experiment, artifact_location=self.artifact_root)
        )
        run = self.client.create_run(experiment_id, run_name=run_name, tags={"fedloom.run_id": run_id})
        self.mlflow_run_id = run.info.run_id
        items = [self._entities.Param(k, v[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(self.mlflow_run_id, params=items[i : i + _PARAMS_PER_BATCH])

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        items = [self._entities.Metric(k, float(v), now, step) for k, v in scalars.items()]
        for i in range(0, len(items), _METRICS_PER_BATCH):
            self.client.log_batch(self.mlflow_run_id, metrics=items[i : i + _METRICS_PER_BATCH])

    def finish(self, status: str, model: bytes | None) -> None:
        if self.mlflow_run_id is None:
            return
        if model is not None:
            with tempfile.TemporaryDirectory(prefix="fedloom-mlflow-") as folder:
                path = Path(folder) / MODEL_ARTIFACT
                path.write_bytes(model)
                self.client.log_artifact(self.mlflow_run_id, str(path))
        self.client.set_terminated(self.mlflow_run_id, status=_STATUSES.get(status, "FAILED"))
        self.mlflow_run_id = None
