"""``fedloom sim --track`` and the feed ``fedloom server`` builds from ``[tracking]``."""

from __future__ import annotations

import sys

import pytest

from fedloom.cli.main import main
from fedloom.cli.server import tracking_observers
from fedloom.core.errors import ConfigError
from fedloom.server.config import AggregatorConfig
from fedloom.store import SqlStore
from fedloom.tracking import TrackingFeed


def test_sim_track_writes_each_sink_under_the_home(tmp_path):
    home = tmp_path / "home"
    argv = ["sim", "--clients", "3", "--rounds", "2", "--model", "logreg", "--home", str(home), "--track"]
    assert main([*argv, "tensorboard,wandb"]) == 0
    with SqlStore.open_default(home) as store:
        (run,) = store.list_runs()
    assert list((home / "tensorboard" / run.id).glob("events.out.tfevents.*"))
    assert list((home / "wandb").glob("offline-run-*/run-*.wandb"))


def test_sim_track_refuses_unknown_sinks_and_no_store(tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["sim", "--rounds", "1", "--home", str(home), "--track", "tensorboard,neptune"]) == 1
    out, err = capsys.readouterr()
    assert "--track tensorboard,neptune: tracking sinks must be among tensorboard, mlflow, wandb; got neptune" in err
    assert "fedloom sim:" not in out and not home.exists()  # refused before the run header, nothing stored
    assert main(["sim", "--rounds", "1", "--no-store", "--track", "tensorboard"]) == 1
    assert "tracking reads each round from the store: drop --no-store" in capsys.readouterr().err


def test_the_server_builds_one_feed_from_the_tracking_table(tmp_path, monkeypatch):
    with SqlStore.open_default(tmp_path) as store:
        assert tracking_observers(AggregatorConfig(), store, tmp_path) == []
        config = AggregatorConfig().replace(sinks=("tensorboard",), tensorboard_dir=str(tmp_path / "tb"))
        (feed,) = tracking_observers(config, store, tmp_path)
        assert isinstance(feed, TrackingFeed) and [s.name for s in feed.sinks] == ["tensorboard"]
        assert feed.sinks[0].logdir == tmp_path / "tb"
        monkeypatch.setitem(sys.modules, "mlflow", None)
        with pytest.raises(ConfigError, match=r"pip install 'fedloom\[mlflow\]'"):
            tracking_observers(AggregatorConfig().replace(sinks=("mlflow",)), store, tmp_path)
