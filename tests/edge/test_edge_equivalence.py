"""Issue 12, edge aggregators: one top, two edges, four devices give the global models of a flat
federation of the same four devices (FedAvg), with the tensors real models have; the top's
sample counts per round are the leaves' sums; each edge's own global models are the top's.

Tolerance (docs/deployment.md, "Edge aggregators"): each level computes the float64 weighted
mean and casts it back once, so a float tensor differs from flat FedAvg by at most
4·eps(dtype)·max|leaf value| (+ a few subnormals), an integer tensor by at most 1 (each level
rounds to the nearest integer); integer tensors that agree across leaves are exact."""

from __future__ import annotations

import numpy as np
import pytest
import shapes_site
from federations import global_models, run_edges, run_flat
from shapes_site import ShapesTrainer, initial_model

from fedloom.core.errors import ConfigError
from fedloom.server.config import AggregatorConfig
from fedloom.server.edge_relay import EdgeRelay
from fedloom.server.edge_setup import edge_strategy

ROUNDS = 3


def assert_fedavg_equal(hier, flat):
    for name, want in flat.items():
        got = hier[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if want.dtype.kind in "iu":
            assert np.max(np.abs(got.astype(np.int64) - want.astype(np.int64)), initial=0) <= 1, name
        else:
            info = np.finfo(want.dtype)
            bound = 4 * float(info.eps) * shapes_site.SEEN[name] + 4 * float(info.smallest_subnormal)
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            assert np.max(diff, initial=0.0) <= bound, (name, np.max(diff), bound)


def test_two_edges_over_four_devices_equal_flat_fedavg(tmp_path):
    trainers = [ShapesTrainer(s) for s in range(4)]
    flat_store, flat_run, errors = run_flat(tmp_path / "flat", initial_model(), trainers, ROUNDS)
    assert errors == []
    hier_store, hier_run, nodes, errors = run_edges(
        tmp_path / "hier", initial_model(), [trainers[:2], trainers[2:]], ROUNDS
    )
    assert errors == []
    flat, hier = global_models(flat_store, flat_run), global_models(hier_store, hier_run)
    assert len(flat) == len(hier) == ROUNDS + 1
    for r in range(1, ROUNDS + 1):
        assert_fedavg_equal(hier[r], flat[r])
        assert not np.array_equal(flat[r]["w"], flat[r - 1]["w"])  # the models moved
        np.testing.assert_array_equal(hier[r]["bn.num_batches_tracked"], flat[r]["bn.num_batches_tracked"])
    samples = [t.samples() for t in trainers]
    # the top saw one update per edge per round, carrying its leaves' sample total: no double counting
    for r in range(1, ROUNDS + 1):
        ups = sorted(m.num_samples for m in hier_store.list_local_models(hier_run, round=r))
        assert ups == [samples[0] + samples[1], samples[2] + samples[3]]
    assert [x.num_samples for x in hier_store.list_rounds(hier_run)] == [sum(samples)] * ROUNDS
    assert [x.num_samples for x in flat_store.list_rounds(flat_run)] == [sum(samples)] * ROUNDS
    for node, edge_store in nodes:  # every edge's global model r is the top's global model r
        run_id = node.aggregator.run_id
        edge_models = global_models(edge_store, run_id)
        assert len(edge_models) == ROUNDS + 1
        for mine, top in zip(edge_models, hier, strict=True):
            for name in top:
                np.testing.assert_array_equal(mine[name], top[name])
        assert edge_store.get_run(run_id).status == "finished"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"strategy": "median"}, "strategy 'median' .* is refused .* --allow-non-mean"),
        ({"strategy": "fedadam"}, "strategy = 'fedadam' .server optimiser 'fedadam'. is refused"),
        ({"strategy": "fedprox"}, "strategy 'fedprox' .aggregator 'mean'. is refused"),
        ({"strategy": "scaffold"}, "strategy 'scaffold' .* only a sample-weighted mean"),
        ({"aggregator": "krum"}, "aggregator 'krum'"),
        ({"filter_max_distance": 3.0}, "filter_max_distance are refused"),
        ({"mode": "async"}, "mode must be 'sync'"),
    ],
)
def test_edges_refuse_strategies_that_are_not_a_sample_weighted_mean(fields, message):
    with pytest.raises(ConfigError, match=message):
        edge_strategy(AggregatorConfig().replace(**fields), EdgeRelay())


def test_a_robust_rule_at_the_edge_only_when_asked_for():
    config = AggregatorConfig().replace(strategy="trimmed_mean", trim_beta=0.2)
    strategy = edge_strategy(config, EdgeRelay(), allow_non_mean=True)
    assert strategy.aggregator.inner.name == "trimmed_mean"
    assert edge_strategy(AggregatorConfig(), EdgeRelay()).aggregator.inner.name == "weighted_mean"


def test_a_server_optimiser_at_the_top_steps_the_flat_mean(tmp_path):
    """FedAdam at the top over edges is FedAdam over the leaves: its step sees the same mean."""
    from light_site import initial_model as logistic_model
    from light_site import make_trainer

    trainers = [make_trainer(str(s)) for s in range(4)]
    top = {"strategy": "fedadam", "server_lr": 0.1, "batch_size": 10_000, "lr": 0.5}
    flat_store, flat_run, errors = run_flat(tmp_path / "flat", logistic_model(), trainers, 2, **top)
    assert errors == []
    hier_store, hier_run, _nodes, errors = run_edges(
        tmp_path / "hier", logistic_model(), [trainers[:2], trainers[2:]], 2, **top
    )
    assert errors == []
    flat, hier = global_models(flat_store, flat_run), global_models(hier_store, hier_run)
    for r in (1, 2):
        for name in flat[r]:
            np.testing.assert_allclose(hier[r][name], flat[r][name], rtol=1e-5, atol=1e-6)
    assert not np.allclose(flat[2]["weight"], 0.0)


def test_full_agents_under_an_edge_verify_its_lineage_and_match_flat(tmp_path):
    """``fedloom agent`` leaves (lineage checks on) under an edge: every model they download is the
    edge's global model, which is the top's, and its lineage chain verifies; same result as flat."""
    from federations import FullSite
    from light_site import initial_model as logistic_model
    from light_site import site_data

    from fedloom.client import NumpyLogisticTrainer

    def site(s):
        x, y = site_data(s)
        return FullSite(lambda: NumpyLogisticTrainer(x.astype(np.float32), y, 3))

    sites = [site(s) for s in range(4)]
    learning = {"batch_size": 10_000, "lr": 0.5}
    flat_store, flat_run, errors = run_flat(tmp_path / "flat", logistic_model(), sites, 2, **learning)
    assert errors == []
    hier_store, hier_run, nodes, errors = run_edges(
        tmp_path / "hier", logistic_model(), [sites[:2], sites[2:]], 2, **learning
    )
    assert errors == []
    flat, hier = global_models(flat_store, flat_run), global_models(hier_store, hier_run)
    for r in (1, 2):
        for name in flat[r]:
            np.testing.assert_allclose(hier[r][name], flat[r][name], rtol=1e-6, atol=1e-7)
    for node, edge_store in nodes:
        report = edge_store.verify_lineage(node.aggregator.run_id)
        assert report.ok and report.checked == 3
