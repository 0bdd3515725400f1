"""TensorBoard: event files written with the ``tensorboard`` package alone (no PyTorch, no TensorFlow).

Scalars are ``simple_value`` summaries (step = round), the run config is one text summary,
and the final model is copied next to the event file (TensorBoard has no artifact store).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedloom.tracking.sink import MODEL_ARTIFACT, require


class TensorBoardSink:
    """Writes ``<logdir>/<run_id>/events.out.tfevents.*``; open with ``tensorboard --logdir <logdir>``."""

    name = "tensorboard"

    def __init__(self, logdir: Path | str) -> None:
        self._writer_module = require("tensorboard.summary.writer.event_file_writer", "tensorboard")
        self._protos = require("tensorboard.compat.proto.summary_pb2", "tensorboard")
        self._events = require("tensorboard.compat.proto.event_pb2", "tensorboard")
        self._tensors = require("tensorboard.compat.proto.tensor_pb2", "tensorboard")
        self.logdir = Path(logdir)
        self.run_dir: Path | None = None
        self._writer: Any = None

    def start(self, run_id: str, run_name: str, params: Mapping[str, str]) -> None:
        self.run_dir = self.logdir / run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._writer = self._writer_module.EventFileWriter(str(self.run_dir))
        text = json.dumps({"run_name": run_name, **params}, sort_keys=True, indent=1)
        self._write(0, self._text_value("config", text))

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        values = [self._protos.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
        self._write(step, values)
        self._writer.flush()

    def finish(self, status: str, model: bytes | None) -> None:
        if self._writer is None:
            return
        self._write(0, self._text_value("status", status))
        if model is not None and self.run_dir is not None:
            (self.run_dir / MODEL_ARTIFACT).write_bytes(model)
        self._writer.close()
        self._writer = None

    def _text_value(self, tag: str, text: str) -> list[Any]:
        meta = self._protos.SummaryMetadata(plugin_data=self._protos.SummaryMetadata.PluginData(plugin_name="text"))
        proto = self._tensors.TensorProto(dtype=7, string_val=[text.encode()])  # 7 = DT_STRING
        return [self._protos.Summary.Value(tag=tag, metadata=meta, tensor=proto)]

    def _write(self, step: int, values: list[Any]) -> None:
        summary = self._protos.Summary(value=values)
        self._writer.add_event(self._events.Event(wall_time=time.time(), step=step, summary=summary))
