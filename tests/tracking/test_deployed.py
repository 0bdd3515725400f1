"""A deployed run through a real aggregator: ``[tracking]`` parsed, each recorded round reaches
the sinks from a worker thread (a slow sink never holds an upload), values equal the store's."""

from __future__ import annotations

import threading
import time

import pytest
import wandb_records
from tracking_helpers import deployment_config, join, upload_body, weights_of

from fedloom.core.errors import ConfigError
from fedloom.core.observe import RunEnd, RunInfo
from fedloom.server.aggregator import Aggregator, RequestRefusedError
from fedloom.server.config import config_from_mapping
from fedloom.store import SqlStore
from fedloom.tracking import TrackingFeed, TrackingSettings, build_sinks

accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator", reason="no tensorboard")


def _run_two_rounds(aggregator: Aggregator, store: SqlStore) -> None:
    agents = [join(aggregator, store, f"site-{i}") for i in range(3)]
    with pytest.raises(RequestRefusedError):  # refused and recorded against round 1
        aggregator.submit_update(agents[0], upload_body(agents[0].id, 7, 1.0, 10))
    for round in (1, 2):
        for i, agent in enumerate(agents):
            aggregator.submit_update(agent, upload_body(agent.id, round, round * (i + 1), 10 * (i + 1)))


def test_a_deployed_run_reaches_tensorboard_and_wandb_with_the_stores_values(tmp_path):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    home = tmp_path / "home"
    config = deployment_config(sinks=("tensorboard", "wandb"))
    with SqlStore.open_default(home) as store:
        feed = TrackingFeed(store, build_sinks(TrackingSettings(sinks=config.tracking.sinks), home))
        aggregator = Aggregator(config, store, initial_weights=_initial(), observers=[feed])
        _run_two_rounds(aggregator, store)
        aggregator.close()  # drains the watchers' queue
        run_id = aggregator.run_id
        assert feed.failures == {}
        rounds = store.list_rounds(run_id)
        assert [r.status for r in rounds] == ["closed", "closed"]

        events = accumulator.EventAccumulator(str(home / "tensorboard" / run_id), size_guidance={"scalars": 0})
        events.Reload()
        (path,) = (home / "wandb").glob("offline-run-*/run-*.wandb")
        wandb_records.wait_for_exit(path)
        history = wandb_records.history(path)
        for metric in store.metrics(run_id, scope="server"):
            tb = {e.step: e.value for e in events.Scalars(f"server/{metric.name}")}
            assert tb[metric.round] == pytest.approx(metric.value, rel=1e-6)
            assert history[metric.round][f"server/{metric.name}"] == metric.value
        for model in store.list_local_models(run_id):
            agent = model.client_id
            assert history[model.round][f"client/{agent}/loss"] == model.metrics["loss"]
        for row in rounds:
            assert history[row.round]["participation/contributed"] == row.num_updates == 3
            assert history[row.round]["participation/num_samples"] == row.num_samples == 60
        (refusal,) = store.list_rejections(run_id)
        assert history[1][f"rejections/{refusal.code}"] == 1 and history[2]["rejections/total"] == 0
        assert wandb_records.artifact_files(path) == [("global_model", "global_model.safetensors")]


#: how long the slow observer takes per round: two rounds watched in line would take twice that
SLOW_SECONDS = 2.0


class Slow:
    """An observer that takes seconds per round, like a far-away tracking server."""

    def __init__(self) -> None:
        self.rounds: list[int] = []
        self.ended: RunEnd | None = None
        self.threads: set[str] = set()

    def on_start(self, run: RunInfo) -> None:
        self.threads.add(threading.current_thread().name)

    def on_round(self, summary) -> None:
        time.sleep(SLOW_SECONDS)
        self.rounds.append(summary.round)

    def on_finish(self, run: RunInfo, end: RunEnd) -> None:
        self.ended = end


def test_a_slow_observer_never_holds_an_upload(tmp_path):
    slow = Slow()
    with SqlStore.open_default(tmp_path / "home") as store:
        aggregator = Aggregator(deployment_config(), store, initial_weights=_initial(), observers=[slow])
        started = time.monotonic()
        _run_two_rounds(aggregator, store)
        # watched in line, the two rounds would take >= 2 * SLOW_SECONDS; a loaded machine needs slack
        assert time.monotonic() - started < 1.5 * SLOW_SECONDS
        aggregator.close()
    assert slow.rounds == [1, 2]
    assert slow.ended is not None and slow.ended.status == "finished" and slow.ended.rounds_completed == 2
    assert slow.threads == {"fedloom-watchers"}


def test_the_tracking_table_of_aggregator_toml():
    config = config_from_mapping({"tracking": {"sinks": ["mlflow", "wandb"], "wandb_mode": "offline"}})
    assert config.tracking.sinks == ("mlflow", "wandb")
    assert config.to_record()["tracking"]["mlflow_experiment"] == "fedloom"
    with pytest.raises(ConfigError, match=r"\[tracking\] sinks must be one of 'tensorboard', 'mlflow', 'wandb'"):
        config_from_mapping({"tracking": {"sinks": ["neptune"]}})
    with pytest.raises(ConfigError, match=r"\[tracking\] sinks must be a list of names"):
        config_from_mapping({"tracking": {"sinks": "mlflow"}})
    with pytest.raises(ConfigError, match=r"\[tracking\] wandb_mode must be one of"):
        config_from_mapping({"tracking": {"wandb_mode": "cloud"}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['logdir'\] in \[tracking\]"):
        config_from_mapping({"tracking": {"logdir": "x"}})


def _initial():
    return weights_of(0.0)
