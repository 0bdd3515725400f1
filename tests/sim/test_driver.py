import io

import numpy as np
import pytest

import fedloom
from fedloom.core import ClientError, weights_equal
from fedloom.sim.config import SimConfig
from fedloom.sim.progress import ProgressPrinter
from fedloom.sim.tasks import build_task
from fedloom.store import SqlStore


@pytest.fixture
def store(tmp_path):
    s = SqlStore.open_default(tmp_path / "home")
    yield s
    s.close()


def run_digits(store, seed=0, rounds=10, model="logreg", clients=10, partition="iid", progress=None, **kw):
    cfg = SimConfig(
        dataset="digits", model=model, clients=clients, partition=partition, rounds=rounds, seed=seed, lr=0.5
    )
    task = build_task(cfg)
    strategy = fedloom.fedavg(fraction=kw.pop("fraction", 1.0), epochs=1, batch_size=16, lr=cfg.lr)
    evaluation = fedloom.Evaluation(
        task.evaluate_fn, client_fraction=kw.pop("client_fraction", 0.0), overlap=kw.pop("overlap", False)
    )
    return fedloom.simulate(
        task.client_fn,
        cfg.clients,
        strategy,
        cfg.rounds,
        seed=seed,
        initial_weights=task.initial_weights,
        environment=fedloom.Environment(client_sizes=task.client_sizes),
        evaluation=evaluation,
        recording=fedloom.Recording(store=store, config=cfg.to_dict()),
        observers=[] if progress is None else [ProgressPrinter(rounds, progress)],
        **kw,
    )


def test_digits_ten_clients_reach_90_percent(store):
    result = run_digits(store)
    accuracy = [a for _, a in result.series("accuracy")]
    assert len(accuracy) == 10
    assert accuracy[-1] >= 0.90
    assert accuracy[-1] > accuracy[0] - 0.02  # no collapse
    assert result.history[0].num_updates == 10


def test_same_seed_same_weights_other_seed_differs(store):
    a = run_digits(store, seed=3, rounds=3, fraction=0.5)
    b = run_digits(store, seed=3, rounds=3, fraction=0.5)
    c = run_digits(store, seed=4, rounds=3, fraction=0.5)
    assert weights_equal(a.final_weights, b.final_weights)
    assert not weights_equal(a.final_weights, c.final_weights)


def test_torch_cnn_run_is_deterministic(store):
    pytest.importorskip("torch")
    a = run_digits(store, seed=1, rounds=2, model="cnn", clients=4, partition="dirichlet", fraction=0.5)
    b = run_digits(store, seed=1, rounds=2, model="cnn", clients=4, partition="dirichlet", fraction=0.5)
    assert weights_equal(a.final_weights, b.final_weights)


def test_run_is_recorded_in_the_store(store):
    result = run_digits(store, rounds=3)
    run = store.get_run(result.run_id)
    assert run.status == "finished" and run.seed == 0
    assert run.config["rounds"] == 3 and run.config["dataset"] == "digits"
    assert [r.round for r in store.list_rounds(result.run_id)] == [1, 2, 3]
    assert len(store.list_global_models(result.run_id)) == 3
    stored = store.load_global_model(result.run_id, 3)
    assert weights_equal(stored, result.final_weights)
    series = store.metric_series(result.run_id, "accuracy")
    assert [r for r, _ in series] == [1, 2, 3]
    assert series[-1][1] == pytest.approx(result.final_metrics["accuracy"])
    assert len(store.list_local_models(result.run_id, round=1)) == 10


class Exploding:
    def __init__(self, inner, fail):
        self.inner, self.fail = inner, fail

    def get_weights(self):
        return self.inner.get_weights()

    def fit(self, weights, config):
        if self.fail:
            raise RuntimeError("disk on fire")
        return self.inner.fit(weights, config)

    def evaluate(self, weights, config):
        return self.inner.evaluate(weights, config)


def test_crashing_client_fails_clearly_or_is_skipped(store):
    task = build_task(SimConfig(clients=4, rounds=2))
    client_fn = lambda i: Exploding(task.client_fn(i), fail=(i == 2))  # noqa: E731
    keep = fedloom.Recording(store=store)
    with pytest.raises(ClientError, match=r"client 2 failed in round 1: RuntimeError: disk on fire(.|\n)*Traceback"):
        fedloom.simulate(client_fn, 4, fedloom.fedavg(fraction=1.0), 2, recording=keep, observers=[])
    failed = store.list_runs()[0]
    assert failed.status == "failed"
    skip = fedloom.Environment(on_client_error="skip")
    with pytest.raises(ClientError, match="only 3 of 4 clients returned a usable update; the strategy needs 4"):
        fedloom.simulate(client_fn, 4, fedloom.fedavg(fraction=1.0), 2, environment=skip, recording=keep, observers=[])
    tolerant = fedloom.fedavg(fraction=1.0, criteria=fedloom.RoundCriteria(threshold=0.5))
    result = fedloom.simulate(client_fn, 4, tolerant, 2, environment=skip, recording=keep, observers=[])
    assert [s.num_updates for s in result.history] == [3, 3]
    rejections = store.list_rejections(result.run_id)
    assert [(r.client_id, r.code) for r in rejections] == [("2", "client_failed"), ("2", "client_failed")]


def test_progress_lines_and_summary_table(store):
    out = io.StringIO()
    run_digits(store, rounds=2, progress=out)
    text = out.getvalue()
    assert "round 1/2 | clients 10/10" in text and "round 2/2" in text
    assert "accuracy" in text and "curve" in text and "fedloom runs show" in text


def test_client_side_evaluation_is_reported(store):
    result = run_digits(store, rounds=1, client_fraction=0.5)
    assert 0.0 <= result.final_metrics["client_accuracy"] <= 1.0
    assert "client_loss" in result.final_metrics


def test_no_store_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_digits(None, rounds=1)
    assert result.run_id is None
    assert not (tmp_path / "fedloom-runs").exists()
    assert np.isfinite(result.final_metrics["loss"])


def test_overlapped_evaluation_gives_the_same_history(store):
    from fedloom.sim.executor import SequentialExecutor

    inline = run_digits(store, rounds=4, fraction=0.5)
    overlapped = run_digits(store, rounds=4, fraction=0.5, executor=SequentialExecutor(), overlap=True)
    assert weights_equal(inline.final_weights, overlapped.final_weights)
    assert [s.round for s in overlapped.history] == [1, 2, 3, 4]
    assert [s.metrics["accuracy"] for s in overlapped.history] == [s.metrics["accuracy"] for s in inline.history]
    assert store.metric_series(overlapped.run_id, "accuracy") == store.metric_series(inline.run_id, "accuracy")
