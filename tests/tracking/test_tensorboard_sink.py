"""A simulated run in TensorBoard: the event file, read by TensorBoard's own reader, holds the store's values."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tracking_helpers import ROUNDS, run_tracked

from fedloom.core.serialization import from_bytes
from fedloom.tracking import TrackingSettings


def test_every_stored_round_value_is_in_the_event_file(tmp_path):
    store, run_id = run_tracked(tmp_path / "home", TrackingSettings(sinks=("tensorboard",)))
    run_dir = tmp_path / "home" / "tensorboard" / run_id
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])

    server = store.metrics(run_id, scope="server")
    assert {m.round for m in server} == set(range(1, ROUNDS + 1))
    for metric in server:
        (point,) = [e for e in events.Scalars(f"server/{metric.name}") if e.step == metric.round]
        assert point.value == pytest.approx(metric.value, rel=1e-6)  # TensorBoard keeps float32
    for model in store.list_local_models(run_id):
        for name, value in model.metrics.items():
            (point,) = [e for e in events.Scalars(f"client/{model.client_id}/{name}") if e.step == model.round]
            assert point.value == pytest.approx(value, rel=1e-6)
    for row in store.list_rounds(run_id):
        by_step = {e.step: e.value for e in events.Scalars("participation/selected")}
        assert by_step[row.round] == len(row.selected) == 6
        assert {e.step: e.value for e in events.Scalars("participation/num_samples")}[row.round] == row.num_samples
        assert {e.step: e.value for e in events.Scalars("rejections/total")}[row.round] == 0
    assert "timing/wall_seconds" in tags and "timing/round_seconds" in tags

    config_text = events.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"rounds": "3"' in config_text and '"model": "logreg"' in config_text
    weights, _ = from_bytes((run_dir / "global_model.safetensors").read_bytes())
    final = store.load_global_model(run_id, ROUNDS)
    assert weights.keys() == final.keys()
    for name in final:
        assert (weights[name] == final[name]).all()
