"""The feed: values from the store (also rounds written late by the round buffer), sinks that
fail are dropped with one log line and never stop the run, and a missing tool names its extra."""

from __future__ import annotations

import logging
import sys

import pytest
from tracking_helpers import ROUNDS, small_config

from fedloom.core.errors import ConfigError
from fedloom.sim.tasks import simulate_config
from fedloom.store import SqlStore
from fedloom.tracking import TrackingFeed, TrackingSettings, build_sinks, settings_from_mapping


class Recorder:
    """A sink that keeps what it is given."""

    name = "recorder"

    def __init__(self) -> None:
        self.params: dict[str, str] = {}
        self.rounds: dict[int, dict[str, float]] = {}
        self.finished: tuple[str, bytes | None] | None = None

    def start(self, run_id, run_name, params):
        self.params = dict(params)

    def log_round(self, step, scalars):
        self.rounds[step] = dict(scalars)

    def finish(self, status, model):
        self.finished = (status, model)


class Broken(Recorder):
    name = "broken"

    def log_round(self, step, scalars):
        raise OSError("disk full")


def test_each_round_reaches_the_sinks_as_stored_and_a_broken_sink_is_dropped(tmp_path, caplog):
    store = SqlStore.open_default(tmp_path / "home")
    recorder, broken = Recorder(), Broken()
    feed = TrackingFeed(store, [broken, recorder])
    with caplog.at_level(logging.WARNING, logger="fedloom.tracking"):
        result = simulate_config(small_config(), store=store, observers=[feed])
    assert sorted(recorder.rounds) == list(range(1, ROUNDS + 1))
    for metric in store.metrics(result.run_id, scope="server"):
        assert recorder.rounds[metric.round][f"server/{metric.name}"] == metric.value
    assert recorder.finished is not None and recorder.finished[0] == "finished"
    assert recorder.finished[1] == store.latest_global_model_bytes(result.run_id)[1]
    assert feed.failures == {"broken": "OSError: disk full"}
    assert [r.getMessage() for r in caplog.records].count(
        "tracking: broken failed in log_round and is turned off for this run: disk full"
    ) == 1


def test_every_refusal_is_counted_once_in_the_round_it_was_recorded_in(tmp_path):
    """Uploads that miss the deadline are refused (``wrong_round``) while the next round runs, and
    the round buffer writes them with that round: each is counted in the step it was recorded in."""
    store = SqlStore.open_default(tmp_path / "home")
    recorder = Recorder()
    feed = TrackingFeed(store, [recorder])
    config = small_config(rounds=5, fraction=0.7, speeds="pareto", speed_spread=1.2, deadline_seconds=3.5, seed=3)
    result = simulate_config(config, store=store, observers=[feed])
    stored = store.list_rejections(result.run_id)
    assert any(r.code == "wrong_round" for r in stored), "the deadline should have refused a late upload"
    reported = [r for r in stored if r.id <= feed.last_rejection_id]
    assert sum(step["rejections/total"] for step in recorder.rounds.values()) == len(reported) > 0
    for code in {r.code for r in reported}:
        counted = sum(step.get(f"rejections/{code}", 0) for step in recorder.rounds.values())
        assert counted == sum(r.code == code for r in reported)
    # a refusal recorded after round r closed (a late upload for r) is counted in a later step
    late = [r for r in reported if r.code == "wrong_round"]
    first_late_step = min(step for step, values in recorder.rounds.items() if values.get("rejections/wrong_round"))
    assert first_late_step > min(r.round for r in late)


@pytest.mark.parametrize(("sink", "module", "extra"), [
    ("tensorboard", "tensorboard", "tensorboard"), ("mlflow", "mlflow", "mlflow"), ("wandb", "wandb", "wandb"),
])  # fmt: skip
def test_a_missing_tool_names_the_extra_that_installs_it(tmp_path, monkeypatch, sink, module, extra):
    """``None`` in ``sys.modules`` makes every import of the package (and of its loaded submodules) fail."""
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=rf"pip install 'fedloom\[{extra}\]'"):
        build_sinks(TrackingSettings(sinks=(sink,)), tmp_path)


def test_tracking_settings_refuse_unknown_names_and_keys():
    with pytest.raises(ConfigError, match="tracking sinks must be among tensorboard, mlflow, wandb; got neptune"):
        TrackingSettings(sinks=("neptune",))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[tracking\]: logdir"):
        settings_from_mapping({"logdir": "x"})
    with pytest.raises(ConfigError, match="sinks must be a list"):
        settings_from_mapping({"sinks": "tensorboard"})
    assert settings_from_mapping({"sinks": ["mlflow"], "wandb_mode": "offline"}).sinks == ("mlflow",)


def test_tracking_without_a_store_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="tracking reads each round from the store"):
        simulate_config(small_config(), store=None, tracking=TrackingSettings(sinks=("tensorboard",)))
