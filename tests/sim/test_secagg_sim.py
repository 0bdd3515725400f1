"""A simulation with secure aggregation equals the same run without it within the stated
quantisation bound, with real model shapes; dropouts at each stage, refusals recorded, and
the strategies and modes it cannot run are refused."""

import numpy as np
import pytest

import fedloom
from fedloom.algorithms.registry import build_strategy
from fedloom.algorithms.secagg import SecAggSettings
from fedloom.algorithms.secagg.ring import error_bound
from fedloom.algorithms.strategy import RoundCriteria
from fedloom.core.errors import ConfigError
from fedloom.core.fit import FitResult
from fedloom.core.rng import rng_for
from fedloom.server.rounds import AsyncSettings
from fedloom.store import SqlStore


def _initial():
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "head.weight": rng.normal(0, 0.3, (5, 4)).astype(np.float64),
        "temperature": np.array(1.0, np.float32),
        "bn.running_mean": np.zeros(4, np.float32),
        "bn.running_var": np.ones(4, np.float32),
        "bn.num_batches_tracked": np.array(0, np.int64),
    }


class PullTrainer:
    """Moves each float tensor halfway to a client-specific target (depends on the start model,
    so a difference in one round propagates) and counts its batches like BatchNorm."""

    def __init__(self, index):
        self.index = index
        self.size = 20 + 7 * index
        rng = np.random.default_rng(100 + index)
        self.target = {k: rng.normal(0, 0.2, v.shape) for k, v in _initial().items() if v.dtype.kind == "f"}

    def get_weights(self):
        return _initial()

    def fit(self, weights, config, terms=None):
        out = {}
        for name, value in weights.items():
            if value.dtype.kind == "f":
                out[name] = np.array(0.5 * value + 0.5 * self.target[name], value.dtype).reshape(value.shape)
            else:
                out[name] = np.array(value + self.size // 4, value.dtype).reshape(value.shape)
        return FitResult(out, self.size, {"loss": float(self.index)})

    def evaluate(self, weights, config):
        return {"loss": 0.0}


def _run(secure=None, rounds=4, clients=8, strategy=None, environment=None, store=None):
    return fedloom.simulate(
        PullTrainer,
        clients,
        strategy or build_strategy("fedavg", fraction=1.0),
        rounds,
        seed=5,
        environment=environment,
        recording=fedloom.Recording(store),
        observers=[],
        secure=secure,
    )


@pytest.mark.parametrize("strategy_name", ["fedavg", "fedavgm"])
def test_a_secure_run_equals_the_plain_run_within_the_bound(strategy_name):
    strategy = build_strategy(strategy_name, fraction=1.0)
    plain = _run(strategy=strategy)
    settings = SecAggSettings(clip_range=1.0, bits=32, neighbours=4, threshold=3)
    secure = _run(settings, strategy=strategy)
    bound = error_bound(1.0, 32)
    for name, value in plain.final_weights.items():
        got = secure.final_weights[name]
        assert got.dtype == value.dtype and got.shape == value.shape
        if value.dtype.kind == "i":
            assert got == value  # counters travel exactly
        else:
            # each round adds at most the bound; a pull of 1/2 halves earlier differences (float32 rounding on top)
            tolerance = 4 * bound + (2e-7 if value.dtype == np.float32 else 1e-12)
            assert np.max(np.abs(got.astype(np.float64) - value)) <= tolerance, name
    assert [s.num_samples for s in secure.history] == [s.num_samples for s in plain.history]


def test_a_coarse_secure_run_differs_from_plain_only_by_the_quantisation():
    """With 6 bits the difference is visible, and still within the bound per round."""
    plain = _run(rounds=1)
    secure = _run(SecAggSettings(clip_range=1.0, bits=6, threshold=0.6), rounds=1)
    diff = max(np.max(np.abs(secure.final_weights[k].astype(float) - v)) for k, v in plain.final_weights.items())
    assert 0 < diff <= error_bound(1.0, 6) + 1e-6


def test_dropouts_at_each_stage_are_recorded_and_the_round_equals_fedavg_of_the_survivors(tmp_path):
    strategy = build_strategy("fedavg", fraction=1.0, criteria=RoundCriteria(threshold=0.25))
    dropout = {"advertise": 0.1, "share": 0.1, "collect": 0.15, "unmask": 0.1}
    world = fedloom.Environment(secagg_dropout=dropout)
    settings = SecAggSettings(clip_range=1.0, bits=32, threshold=3)  # complete graph: 11 neighbours, 3 suffice
    with SqlStore.open_default(tmp_path) as store:
        result = _run(settings, rounds=3, clients=12, strategy=strategy, environment=world, store=store)
        run = store.list_runs()[0]
        rejections = store.list_rejections(run.id)
        local_models = store.list_local_models(run.id)
    assert result.config["secure_aggregation"]["dropout"] == dropout
    ids = [str(i) for i in range(12)]
    expected_missing = []
    for r in (1, 2, 3):
        gone = set()
        for stage in ("advertise", "share", "collect"):
            u = rng_for(5, "secagg-dropout", r, stage).random(12)
            gone |= {cid for cid, x in zip(sorted(ids), u, strict=True) if x < dropout[stage]}
        expected_missing.append(gone)
    assert any(expected_missing)  # the seed really drops clients
    for summary, gone in zip(result.history, expected_missing, strict=True):
        survivors = [c for c in ids if c not in gone]
        assert summary.num_samples == sum(PullTrainer(int(c)).size for c in survivors)
    dropped = {(r.round, r.client_id) for r in rejections if r.code == "secagg_dropped"}
    assert dropped == {(r, c) for r, gone in enumerate(expected_missing, start=1) for c in gone}
    assert all("dropped out of secure aggregation at stage" in r.reason for r in rejections)
    # every contributor is recorded (id, samples) without tensors: the server never had them
    assert len(local_models) == sum(s.num_updates for s in result.history)
    assert all(m.blob_key is None for m in local_models)


def test_one_secure_round_is_the_survivors_fedavg():
    dropout = {"collect": 0.3}
    world = fedloom.Environment(secagg_dropout=dropout)
    strategy = build_strategy("fedavg", fraction=1.0, criteria=RoundCriteria(threshold=0.5))
    result = _run(SecAggSettings(bits=32, threshold=0.55), rounds=1, clients=10, strategy=strategy, environment=world)
    u = rng_for(5, "secagg-dropout", 1, "collect").random(10)
    survivors = [c for c, x in zip(sorted(str(i) for i in range(10)), u, strict=True) if x >= 0.3]
    assert len(survivors) < 10
    trainers = [PullTrainer(int(c)) for c in survivors]
    start = _initial()
    total = sum(t.size for t in trainers)
    for name, value in start.items():
        locals_ = [t.fit(start, None).weights[name].astype(np.float64) for t in trainers]
        mean = sum(t.size * w for t, w in zip(trainers, locals_, strict=True)) / total
        got = result.final_weights[name].astype(np.float64)
        if value.dtype.kind == "i":
            assert got == np.rint(mean)
        else:
            assert np.max(np.abs(got - mean)) <= error_bound(1.0, 32) + 1e-7, name


def test_a_round_below_the_threshold_is_abandoned_with_the_reason_and_no_model(tmp_path):
    world = fedloom.Environment(secagg_dropout={"collect": 0.6})
    strategy = build_strategy("fedavg", fraction=1.0, criteria=RoundCriteria(threshold=0.1))
    with SqlStore.open_default(tmp_path) as store:
        result = _run(
            SecAggSettings(threshold=0.9), rounds=2, clients=6, strategy=strategy, environment=world, store=store
        )
        run = store.list_runs()[0]
        models = store.list_global_models(run.id)
        rejections = store.list_rejections(run.id)
    assert result.history == [] or all(s.num_updates == 0 for s in result.history)
    assert len(models) == 0  # no wrong model was ever made
    refused = [r for r in rejections if r.code == "secagg_below_threshold"]
    assert {r.round for r in refused} == {1, 2}
    assert all("refused at stage 'collect'" in r.reason and "threshold 5" in r.reason for r in refused)
    for name, value in _initial().items():
        np.testing.assert_array_equal(result.final_weights[name], value)


@pytest.mark.parametrize("aggregator", ["median", "krum", "trimmed_mean"])
def test_a_robust_aggregator_is_refused(aggregator):
    with pytest.raises(ConfigError, match=f"only the sum of the updates; aggregator '{aggregator}'"):
        _run(SecAggSettings(), strategy=build_strategy("fedavg", aggregator=aggregator))


def test_asynchronous_mode_deadlines_and_dropouts_without_secagg_are_refused():
    with pytest.raises(ConfigError, match="synchronous rounds only"):
        _run(SecAggSettings(), environment=fedloom.Environment(asynchronous=AsyncSettings(buffer_size=2)))
    with pytest.raises(ConfigError, match="deadline_seconds"):
        _run(SecAggSettings(), environment=fedloom.Environment(deadline_seconds=5.0, client_sizes=[20] * 8))
    with pytest.raises(ConfigError, match="needs secure aggregation"):
        _run(None, environment=fedloom.Environment(secagg_dropout={"share": 0.1}))
    with pytest.raises(ConfigError, match="never holds a local model"):
        fedloom.simulate(
            PullTrainer, 4, build_strategy("fedavg"), 1, recording=fedloom.Recording(None, keep_local_models=True),
            observers=[], secure=SecAggSettings(),
        )  # fmt: skip
    with pytest.raises(ConfigError, match="stage 'typo' is unknown"):
        fedloom.Environment(secagg_dropout={"typo": 0.1})


def test_the_parallel_executor_gives_the_bitwise_same_secure_run():
    """The ring sum is exact integer arithmetic, so the order in which workers deliver cannot change it."""
    from fedloom.sim import ParallelExecutor

    settings = SecAggSettings(bits=32, neighbours=4, threshold=3)
    sequential = _run(settings, rounds=2)
    parallel = fedloom.simulate(
        PullTrainer,
        8,
        build_strategy("fedavg", fraction=1.0),
        2,
        seed=5,
        executor=ParallelExecutor(workers=2),
        recording=fedloom.Recording(None),
        observers=[],
        secure=settings,
    )
    for name, value in sequential.final_weights.items():
        np.testing.assert_array_equal(parallel.final_weights[name], value)


def test_an_interrupted_secure_run_resumes_bitwise_identical(tmp_path):
    settings = SecAggSettings(bits=32, neighbours=4, threshold=3)
    world = fedloom.Environment(secagg_dropout={"collect": 0.1})
    strategy = build_strategy("fedadam", fraction=1.0, criteria=RoundCriteria(threshold=0.5))
    common = {"seed": 5, "observers": [], "secure": settings, "environment": world, "initial_weights": _initial()}
    reference = fedloom.simulate(PullTrainer, 8, strategy, 4, recording=fedloom.Recording(None), **common)
    with SqlStore.open_default(tmp_path) as store:

        def stop_in_round_three(i):
            if len(store.list_global_models(store.list_runs()[0].id)) >= 2:
                raise KeyboardInterrupt
            return PullTrainer(i)

        with pytest.raises(KeyboardInterrupt):
            fedloom.simulate(stop_in_round_three, 8, strategy, 4, recording=fedloom.Recording(store), **common)
        run = store.list_runs()[0]
        result = fedloom.simulate(
            PullTrainer, 8, strategy, 4, recording=fedloom.Recording(store, resume=run.id), **common
        )
    assert [s.round for s in result.history] == [3, 4]
    for name, value in reference.final_weights.items():
        np.testing.assert_array_equal(result.final_weights[name], value, err_msg=name)


def test_clients_dropped_before_training_are_recorded_once(tmp_path):
    from fedloom.sim.clock import ClientSpeeds

    world = fedloom.Environment(client_sizes=[PullTrainer(i).size for i in range(8)], speeds=ClientSpeeds(dropout=0.3))
    strategy = build_strategy("fedavg", fraction=1.0, criteria=RoundCriteria(threshold=0.3))
    with SqlStore.open_default(tmp_path) as store:
        result = _run(SecAggSettings(bits=32, threshold=3), rounds=2, strategy=strategy, environment=world, store=store)
        rejections = store.list_rejections(store.list_runs()[0].id)
    per_client = [(r.round, r.client_id) for r in rejections]
    assert any(r.code == "dropped" for r in rejections)
    assert not any(r.code == "secagg_dropped" for r in rejections)
    assert len(per_client) == len(set(per_client))
    assert [s.num_updates + sum(1 for r in rejections if r.round == s.round) for s in result.history] == [8, 8]
