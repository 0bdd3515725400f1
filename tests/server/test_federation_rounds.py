"""Several aggregators, one federation, in one process on one shared store: every semi-global model
is checked against the formula from the store's recorded cluster models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aggregator_helpers import config

from federation_check import check_semi_global
from fedloom.core import from_bytes, to_bytes
from fedloom.core.errors import ConfigError, StoreError
from fedloom.server.aggregator import Aggregator
from fedloom.store import SqlStore

CLUSTERS = ("a1", "a2", "a3")
#: a model with the shapes real ones have: float32 weights, a float64 buffer, BatchNorm's 0-d int64 counter
INIT = {
    "w": np.zeros((2, 3), np.float32),
    "bn.running_var": np.ones(3, np.float64),
    "bn.num_batches_tracked": np.array(0, np.int64),
}


def weights_of(value: float, counter: int) -> dict[str, np.ndarray]:
    return {
        "w": np.full((2, 3), value, np.float32),
        "bn.running_var": np.full(3, value * 1e-3, np.float64),
        "bn.num_batches_tracked": np.array(counter, np.int64),
    }


def cluster_config(cluster: str, **fields):
    return config(name="fed", cluster=cluster, clusters=CLUSTERS, max_rounds=4, min_agents=2, **fields)


def start(store, clock, cluster: str, **fields) -> Aggregator:
    return Aggregator(cluster_config(cluster, **fields), store, clock=clock, initial_weights=INIT)


def upload(agg: Aggregator, store: SqlStore, agent_id: str, value: float, n: int, counter: int) -> None:
    round_no = agg.current_round
    body = to_bytes(weights_of(value, counter), round=round_no, client_id=agent_id, num_samples=n,
                    extra={"metrics": json.dumps({"loss": value})})  # fmt: skip
    assert agg.submit_update(store.get_agent(agent_id), body) == round_no


def check_against_formula(agg: Aggregator, store: SqlStore, round_no: int) -> None:
    """The served model that starts round ``round_no + 1`` is the stored global model, which is the formula's."""
    served, _ = from_bytes(agg.global_model_bytes(round_no + 1)[0])
    stored = store.load_global_model(agg.run_id, round_no)
    for name, reference in INIT.items():
        assert served[name].dtype == reference.dtype and served[name].shape == reference.shape, name
        assert served[name].tobytes() == stored[name].tobytes(), name
    check_semi_global(store, agg.run_id, round_no)


@pytest.fixture
def federation(store, clock):
    """Three aggregators on one store, two agents each; the join tokens are shared by all three."""
    aggregators = {c: start(store, clock, c) for c in CLUSTERS}
    tokens, agents = {}, {}
    for c, agg in aggregators.items():
        for k in range(2):
            name = f"{c}-site{k}"
            tokens[name] = store.create_token(name)
            agents[name] = agg.register(name, tokens[name]).agent_id
    return aggregators, tokens, agents


def test_each_cluster_mixes_the_newest_recorded_cluster_models_of_the_others(federation, store):
    aggs, _, agents = federation
    assert {store.get_run(a.run_id).name for a in aggs.values()} == {"fed.a1", "fed.a2", "fed.a3"}
    samples = {"a1": (10, 30), "a2": (5, 5), "a3": (100, 20)}
    for c in ("a1", "a2", "a3"):  # round 1 closes on a1 first, then a2 (sees a1), then a3 (sees both)
        for k, n in enumerate(samples[c]):
            upload(aggs[c], store, agents[f"{c}-site{k}"], value=1.0 + CLUSTERS.index(c) + k, n=n, counter=10 * k + 3)
    used = {c: [(p.cluster, p.round) for p in store.cluster_model(aggs[c].run_id, 1).peers] for c in CLUSTERS}
    assert used == {"a1": [], "a2": [("a1", 1)], "a3": [("a1", 1), ("a2", 1)]}
    for c in CLUSTERS:
        record = store.cluster_model(aggs[c].run_id, 1)
        assert record.num_samples == sum(samples[c])  # n_i(r): the samples of the cluster's own round
        check_against_formula(aggs[c], store, 1)
    # a1's round 1 had no peer yet: its semi-global model is its own cluster model
    own = store.load_cluster_model(store.cluster_model(aggs["a1"].run_id, 1))
    assert all(own[k].tobytes() == store.load_global_model(aggs["a1"].run_id, 1)[k].tobytes() for k in INIT)
    # the round's server metrics say how many samples the semi-global model weighs
    assert dict(store.metric_series(aggs["a3"].run_id, "semi_global_samples"))[1] == 40 + 10 + 120
    # round 2: a1 alone moves on; a2 and a3 are one round behind, which max_staleness_rounds = 2 allows
    upload(aggs["a1"], store, agents["a1-site0"], 2.0, 10, 7)
    upload(aggs["a1"], store, agents["a1-site1"], 4.0, 30, 9)
    assert [(p.cluster, p.round) for p in store.cluster_model(aggs["a1"].run_id, 2).peers] == [("a2", 1), ("a3", 1)]
    check_against_formula(aggs["a1"], store, 2)


def test_peers_too_far_behind_are_left_out(store, clock):
    aggs = {c: start(store, clock, c, max_staleness_rounds=1) for c in ("a1", "a2")}
    agents = {}
    for c, agg in aggs.items():
        for k in range(2):
            agents[c, k] = agg.register(f"{c}-{k}", store.create_token(f"{c}-{k}")).agent_id
    for c in ("a2", "a1"):
        for k in range(2):
            upload(aggs[c], store, agents[c, k], 1.0 + k, 10, 1)
    for round_no, expected in ((2, [("a2", 1)]), (3, [])):  # a2 stays at round 1: 1 behind, then 2 (> 1)
        for k in range(2):
            upload(aggs["a1"], store, agents["a1", k], float(round_no + k), 10, round_no)
        assert [(p.cluster, p.round) for p in store.cluster_model(aggs["a1"].run_id, round_no).peers] == expected
        check_against_formula(aggs["a1"], store, round_no)
    assert store.get_run(aggs["a1"].run_id).status == "running" and aggs["a1"].current_round == 4


class FailOnce:
    """A store whose next ``save_global_model`` fails (the database went away mid-close)."""

    def __init__(self, store: SqlStore) -> None:
        self._store, self.armed = store, False

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if name != "save_global_model":
            return attribute

        def write(*args, **kwargs):
            if self.armed:
                self.armed = False
                raise StoreError("save_global_model failed (test)")
            return attribute(*args, **kwargs)

        return write


def test_a_round_closed_again_after_a_failure_uses_its_recorded_cluster_model_and_peers(store, clock):
    proxy = FailOnce(store)
    a1 = Aggregator(cluster_config("a1"), proxy, clock=clock, initial_weights=INIT)
    a2 = start(store, clock, "a2")
    ids = {n: agg.register(n, store.create_token(n)).agent_id for agg, n in
           ((a1, "x0"), (a1, "x1"), (a2, "y0"), (a2, "y1"))}  # fmt: skip
    upload(a2, store, ids["y0"], 3.0, 20, 5)
    upload(a2, store, ids["y1"], 5.0, 20, 5)
    upload(a1, store, ids["x0"], 1.0, 10, 2)
    proxy.armed = True
    upload(a1, store, ids["x1"], 1.0, 10, 2)  # accepted; the cluster model is recorded, the global model is not
    assert a1.current_round == 1 and [m.round for m in store.list_global_models(a1.run_id)] == [0]
    first = store.cluster_model(a1.run_id, 1)
    assert [(p.cluster, p.round) for p in first.peers] == [("a2", 1)]
    upload(a2, store, ids["y0"], 7.0, 20, 6)  # meanwhile a2 records round 2: a newer peer model
    upload(a2, store, ids["y1"], 7.0, 20, 6)
    a1.tick()  # the round closes again: written once, the first record decides
    assert a1.current_round == 2
    assert store.cluster_model(a1.run_id, 1) == first
    check_against_formula(a1, store, 1)
    # and a restarted a1 resumes from its own last recorded round
    again = start(store, clock, "a1")
    assert again.run_id == a1.run_id and again.current_round == 2


def test_the_federation_table_is_checked_at_start() -> None:
    with pytest.raises(ConfigError, match=r"\[federation\] cluster is 'a9', which is not in clusters"):
        config(cluster="a9", clusters=CLUSTERS)
    with pytest.raises(ConfigError, match=r"\[federation\] clusters lists a cluster twice"):
        config(cluster="a1", clusters=("a1", "a1"))
    with pytest.raises(ConfigError, match=r"\[federation\] cluster is missing"):
        config(clusters=CLUSTERS)
    with pytest.raises(ConfigError, match=r"\[federation\] max_staleness_rounds must be >= 0"):
        config(cluster="a1", clusters=CLUSTERS, max_staleness_rounds=-1)
    with pytest.raises(ConfigError, match=r"\[federation\] needs \[run\] mode = 'sync'"):
        config(cluster="a1", clusters=CLUSTERS, mode="async")
    with pytest.raises(ConfigError, match=r"\[run\] name with cluster 'a1' makes the run name"):
        config(cluster="a1", clusters=CLUSTERS, name="f" * 62)


def test_the_example_config_of_a_federation_loads() -> None:
    from pathlib import Path

    from fedloom.server.config import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "federation-a1.toml"
    loaded = load_config(example, environ={})
    assert (loaded.federation.cluster, loaded.federation.clusters) == ("a1", ("a1", "a2", "a3"))
    assert loaded.federation.max_staleness_rounds == 2
    assert loaded.federation.run_name(loaded.run.name) == "eu-pilot.a1"


def test_a_peer_model_that_does_not_fit_is_left_out_and_recorded(store, clock):
    a1 = start(store, clock, "a1")
    for cluster, weights in (
        ("a2", {**weights_of(1.0, 1), "w": np.zeros((3, 2), np.float32)}),  # another shape
        ("a3", {**weights_of(1.0, 1), "bn.running_var": np.full(3, np.nan)}),  # not finite
    ):
        peer = store.create_run(f"fed.{cluster}", "deployment", {}, seed=0)
        store.save_cluster_model(peer, "fed", cluster, 1, weights, 50, [])
    ids = [a1.register(n, store.create_token(n)).agent_id for n in ("x0", "x1")]
    upload(a1, store, ids[0], 2.0, 10, 4)
    upload(a1, store, ids[1], 4.0, 30, 8)
    assert a1.current_round == 2  # the round closed without them
    assert store.cluster_model(a1.run_id, 1).peers == ()
    check_against_formula(a1, store, 1)
    refused = [(r.client_id, r.code, r.round) for r in store.list_rejections(a1.run_id)]
    assert refused == [("a2", "peer_model_refused", 1), ("a3", "peer_model_refused", 1)]
    reasons = " ".join(r.reason for r in store.list_rejections(a1.run_id))
    assert "cluster 'a2' round 1" in reasons and "'w'" in reasons and "cluster 'a3' round 1" in reasons
