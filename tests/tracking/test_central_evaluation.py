"""The aggregator's own evaluation of each global model: recorded under the round, before tracking reads it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import fedloom
from fedloom.core.errors import ConfigError
from fedloom.core.observe import RoundSummary, RunEnd, RunInfo
from fedloom.data import load_digits
from fedloom.server.config import AggregatorConfig
from fedloom.store import SqlStore
from fedloom.tracking.central_evaluation import CentralEvaluation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_site.py"


def _summary(round_no: int) -> RoundSummary:
    return RoundSummary(round_no, 3, 3, 30, {}, 0.1)


def _digits_trainer() -> fedloom.NumpyLogisticTrainer:
    data = load_digits()
    return fedloom.NumpyLogisticTrainer(
        data.train.x, data.train.y, data.num_classes, x_eval=data.test.x, y_eval=data.test.y
    )


def _run_with_models(tmp_path: Path, rounds: list[int]) -> tuple[SqlStore, str, dict[int, dict[str, np.ndarray]]]:
    store = SqlStore.open_default(tmp_path)
    run_id = store.create_run("evaluated", "deployment", {}, 0)
    trainer = _digits_trainer()
    models = {}
    for r in rounds:
        weights = trainer.fit(trainer.get_weights(), fedloom.FitConfig(round=r, epochs=r + 1, lr=0.5, seed=r)).weights
        store.save_global_model(run_id, r, weights, 100)
        models[r] = weights
    return store, run_id, models


def test_each_round_model_is_evaluated_and_recorded_as_server_metrics(tmp_path: Path) -> None:
    store, run_id, models = _run_with_models(tmp_path, [0, 1, 2])
    trainer = _digits_trainer()
    watcher = CentralEvaluation(store, trainer)
    info = RunInfo(run_id, "evaluated", "deployment", 3, 0)
    watcher.on_start(info)
    for r in (1, 2, 3):  # round 3 made no model (abandoned): nothing recorded
        watcher.on_round(_summary(r))
    watcher.on_finish(info, RunEnd("finished", 3))
    for r in (1, 2):
        expected = trainer.evaluate(models[r], fedloom.EvalConfig())
        assert dict(store.metric_series(run_id, "accuracy"))[r] == pytest.approx(expected["accuracy"], abs=0)
    assert [r for r, _ in store.metric_series(run_id, "accuracy")] == [1, 2]
    accuracy = dict(store.metric_series(run_id, "accuracy"))
    assert accuracy[2] > 0.5 and accuracy[2] != accuracy[1]  # a real test of different models


class _Broken:
    calls = 0

    def evaluate(self, weights, config):
        self.calls += 1
        raise RuntimeError("test data missing")


def test_a_failing_evaluator_is_logged_once_and_never_stops_the_run(tmp_path: Path, caplog) -> None:
    store, run_id, _ = _run_with_models(tmp_path, [1, 2])
    broken = _Broken()
    watcher = CentralEvaluation(store, broken)
    watcher.on_start(RunInfo(run_id, "evaluated", "deployment", 2, 0))
    with caplog.at_level(logging.WARNING, logger="fedloom.evaluation"):
        watcher.on_round(_summary(1))
        watcher.on_round(_summary(2))
    assert broken.calls == 1 and "test data missing" in (watcher.failure or "")
    assert len([r for r in caplog.records if "evaluation of round 1 failed" in r.getMessage()]) == 1
    assert store.metric_series(run_id, "accuracy") == []


def test_non_finite_evaluations_are_refused_not_stored(tmp_path: Path) -> None:
    store, run_id, _ = _run_with_models(tmp_path, [1])

    class _NaN:
        def evaluate(self, weights, config):
            return {"accuracy": float("nan")}

    watcher = CentralEvaluation(store, _NaN())
    watcher.on_start(RunInfo(run_id, "evaluated", "deployment", 1, 0))
    watcher.on_round(_summary(1))
    assert watcher.failure is not None and store.metric_series(run_id, "accuracy") == []


def test_the_evaluation_table_is_checked_and_names_the_field() -> None:
    config = AggregatorConfig().replace(evaluator=f"{EXAMPLE}:make_trainer", evaluator_args=("site=0", "sites=1"))
    assert config.evaluation.evaluator_args == ("site=0", "sites=1")
    with pytest.raises(ConfigError, match=r"\[evaluation\] evaluator"):
        AggregatorConfig().replace(evaluator="no_colon_here")
    with pytest.raises(ConfigError, match=r"\[evaluation\] evaluator_args"):
        AggregatorConfig().replace(evaluator=f"{EXAMPLE}:make_trainer", evaluator_args=("site",))
    with pytest.raises(ConfigError, match="without an evaluator"):
        AggregatorConfig().replace(evaluator_args=("site=0",))


def test_fedloom_server_builds_the_evaluator_before_the_tracking_feed(tmp_path: Path) -> None:
    from fedloom.cli.server import evaluation_observers

    store = SqlStore.open_default(tmp_path)
    config = AggregatorConfig().replace(evaluator=f"{EXAMPLE}:make_trainer", evaluator_args=("site=0", "sites=1"))
    (watcher,) = evaluation_observers(config, store)
    assert isinstance(watcher, CentralEvaluation)
    assert len(watcher.trainer.y) == len(load_digits().train.y)  # one site of one: the whole split
    assert evaluation_observers(AggregatorConfig(), store) == []
