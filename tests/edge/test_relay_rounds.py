"""An edge's downstream rounds in process (no sockets): the round is served from the top's model
with the top's config, its weighted mean goes upstream once its close policy allows, later
uploads are refused and recorded, and it closes only when the top moves on, with the top's
next model as its global model."""

from __future__ import annotations

import numpy as np
import pytest
from aggregator_helpers import config, join, payload, weights_of

from fedloom.core.errors import ClientError
from fedloom.core.fit import FitConfig
from fedloom.core.serialization import content_hash
from fedloom.core.terms import ClientTerms
from fedloom.server.aggregator import Aggregator, RequestRefusedError
from fedloom.server.edge_relay import EdgeRelay, EdgeTrainer, check_upstream_task
from fedloom.server.edge_setup import edge_lifecycle, edge_strategy

G0, G1 = weights_of(0.0), weights_of(5.0)
UPSTREAM = FitConfig(round=7, epochs=3, batch_size=8, lr=0.25, seed=99, extra={"note": "top"})


def edge(store, clock, **fields):
    relay = EdgeRelay()
    cfg = config(**{"min_agents": 3, "max_rounds": 1000, **fields})
    strategy = edge_strategy(cfg, relay)
    agg = Aggregator(cfg, store, clock=clock, strategy=strategy, lifecycle=edge_lifecycle(relay, strategy))
    return agg, relay


def upload(agg, store, agent_id, round, value, n):
    return agg.submit_update(store.get_agent(agent_id), payload(agent_id, round, value, n))


def test_a_round_is_published_held_and_closed_with_the_tops_next_model(store, clock):
    agg, relay = edge(store, clock, threshold=0.6)
    ids = [join(agg, store, f"leaf-{i}").agent_id for i in range(3)]
    assert agg.set_initial_model(G0) is not None and agg.set_initial_model(G0) is None
    assert agg.task_for(ids[0]).state == "wait"  # the top has not offered its config yet
    sha0 = relay.offer(G0, UPSTREAM)
    agg.tick()
    task = agg.task_for(ids[0])
    assert task.state == "train" and task.global_sha256 == sha0
    assert (task.config["epochs"], task.config["batch_size"], task.config["lr"]) == (3, 8, 0.25)
    assert task.config["round"] == 1 and task.config["extra"] == {"note": "top"} and task.config["seed"] != 99
    upload(agg, store, ids[0], 1, 1.0, 10)
    upload(agg, store, ids[1], 1, 4.0, 30)  # 2 of 3 = the threshold: published, held open
    found = relay.wait_aggregate(sha0, timeout=0)
    assert found.num_samples == 40 and found.round == 1
    np.testing.assert_allclose(found.weights["w"], np.full((2, 3), (10 * 1.0 + 30 * 4.0) / 40), rtol=1e-6)
    assert agg.task_for(ids[2]).state == "wait"  # the aggregate already went upstream
    with pytest.raises(RequestRefusedError, match="already forwarded"):
        upload(agg, store, ids[2], 1, 9.0, 10)
    [refused] = [r for r in store.list_rejections(agg.run_id) if r.client_id == ids[2]]
    assert refused.code == "round_closed" and refused.round == 1
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0]  # held: the top has not moved on
    relay.offer(G1, UPSTREAM)
    agg.tick()
    stored = store.load_global_model(agg.run_id, 1)
    assert content_hash(stored) == content_hash(G1)  # the round's global model is the top's next one
    first = store.list_rounds(agg.run_id)[0]
    assert (first.round, first.status, first.num_samples) == (1, "closed", 40)
    assert agg.task_for(ids[2]).state == "train" and agg.task_for(ids[2]).round == 2


def test_the_edges_run_finishes_with_the_tops_final_model(store, clock):
    agg, relay = edge(store, clock)
    ids = [join(agg, store, f"leaf-{i}").agent_id for i in range(3)]
    agg.set_initial_model(G0)
    relay.offer(G0, UPSTREAM)
    agg.tick()
    for i, agent_id in enumerate(ids):
        upload(agg, store, agent_id, 1, float(i), 5)
    relay.finish(G1)
    agg.tick()
    assert agg.task_for(ids[0]).state == "finished"
    assert content_hash(store.load_global_model(agg.run_id, 1)) == content_hash(G1)
    assert store.get_run(agg.run_id).status == "finished"


def test_a_restarted_edge_resumes_its_round_from_the_store(store, clock):
    agg, relay = edge(store, clock)
    ids = [join(agg, store, f"leaf-{i}").agent_id for i in range(3)]
    agg.set_initial_model(G0)
    sha0 = relay.offer(G0, UPSTREAM)
    agg.tick()
    upload(agg, store, ids[0], 1, 2.0, 10)
    again, relay2 = edge(store, clock)  # a new process on the same store (the first one was killed)
    assert again.run_id == agg.run_id and again.task_for(ids[1]).state == "wait"  # no top config yet
    relay2.offer(G0, UPSTREAM)
    again.tick()
    with pytest.raises(RequestRefusedError, match="already sent an update"):  # the stored one counts, once
        upload(again, store, ids[0], 1, 2.0, 10)
    upload(again, store, ids[1], 1, 2.0, 20)
    upload(again, store, ids[2], 1, 2.0, 30)
    assert relay2.wait_aggregate(sha0, timeout=0).num_samples == 60


def test_the_trainer_waits_for_its_round_and_refuses_what_it_cannot_forward(store, clock):
    agg, relay = edge(store, clock, min_agents=1)
    (leaf,) = [join(agg, store, "leaf-0").agent_id]
    trainer = EdgeTrainer(relay, agg.set_initial_model, agg.tick, round_timeout=0.2)
    with pytest.raises(TimeoutError):
        trainer.fit(G0, UPSTREAM)
    upload(agg, store, leaf, 1, 3.0, 12)
    result = trainer.fit(G0, UPSTREAM)
    assert result.num_samples == 12 and result.metrics == {"loss": 3.0}
    with pytest.raises(ClientError, match="scaffold"):
        check_upstream_task({"client_parts": ["scaffold"]}, ClientTerms())
    with pytest.raises(ClientError, match="per-client losses"):
        check_upstream_task({}, ClientTerms(report_initial_loss=True))
    check_upstream_task({"client_parts": ["fedprox"]}, ClientTerms())  # the leaves apply FedProx's term


def test_an_edge_restarted_while_holding_a_round_closes_it_with_the_tops_next_model(store, clock):
    """Killed after its aggregate went upstream, before the top moved on: the restarted edge holds the
    same round (its stored updates, counted once), publishes the same aggregate, and closes the round
    with the top's next model when its upstream agent brings it."""
    agg, relay = edge(store, clock)
    ids = [join(agg, store, f"leaf-{i}").agent_id for i in range(3)]
    agg.set_initial_model(G0)
    sha0 = relay.offer(G0, UPSTREAM)
    agg.tick()
    for i, agent_id in enumerate(ids):
        upload(agg, store, agent_id, 1, float(i), 10 * (i + 1))
    before = relay.wait_aggregate(sha0, timeout=0)
    again, relay2 = edge(store, clock)  # the restart: the relay's memory is gone, the store is not
    again.tick()
    after = relay2.wait_aggregate(sha0, timeout=0)  # the held round publishes the same aggregate again
    assert after.num_samples == before.num_samples == 60
    assert content_hash(after.weights) == content_hash(before.weights)
    relay2.offer(G1, UPSTREAM)
    again.tick()
    assert content_hash(store.load_global_model(again.run_id, 1)) == content_hash(G1)
    assert len(store.list_local_models(again.run_id, round=1)) == 3
    assert again.task_for(ids[0]).round == 2 and again.task_for(ids[0]).state == "train"
