"""Who an agent is and what it may claim: name binding, token limits, revocation, sample counts."""

from __future__ import annotations

import numpy as np
import pytest
from aggregator_helpers import payload

from fedloom.core import from_bytes
from fedloom.server.aggregator import RequestRefusedError
from fedloom.store import SqlStore

#: a model shaped like a real one: a BatchNorm layer's buffers (0-d int64 counter), float64, tiny values
BN_INIT = {
    "conv.weight": np.full((2, 3), 1e-30, np.float32),
    "bn.running_mean": np.zeros(3, np.float64),
    "bn.num_batches_tracked": np.array(0, np.int64),
}


def bn_weights(value: float, batches: int) -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.full((2, 3), value, np.float32),
        "bn.running_mean": np.full(3, value, np.float64),
        "bn.num_batches_tracked": np.array(batches, np.int64),
    }


def refusal_of(call, *args, **kwargs) -> RequestRefusedError:
    with pytest.raises(RequestRefusedError) as info:
        call(*args, **kwargs)
    return info.value


def codes(store: SqlStore, run_id: str) -> list[str]:
    return [r.code for r in store.list_rejections(run_id)]


# --------------------------------------------------------------------- item 1: identity takeover


def test_another_token_cannot_take_over_a_registered_name(make_aggregator, store):
    agg = make_aggregator(min_agents=2)
    victim = agg.register("site-a", store.create_token("site-a"))
    impostor_token = store.create_token("site-b", role="admin")
    refused = refusal_of(agg.register, "site-a", impostor_token)
    assert (refused.status, refused.code) == (409, "name_taken")
    assert "another join token ('site-a')" in refused.detail and "--name" in refused.detail
    assert codes(store, agg.run_id) == ["name_taken"]
    agent = agg.authenticate(victim.credential)  # the victim keeps working, with its own role
    assert agent is not None
    assert (agent.id, agent.role) == (victim.agent_id, "agent")
    assert agg.agents == (victim.agent_id,)
    # the impostor's token still registers a name of its own, as a distinct agent
    own = agg.register("site-b", impostor_token)
    assert own.agent_id != victim.agent_id and own.role == "admin"


def test_re_registering_keeps_the_role(make_aggregator, store):
    agg = make_aggregator()
    first = agg.register("site-a", store.create_token("site-a"))
    store.revoke_token("site-a")
    again = agg.register("site-a", store.create_token("site-a", role="admin"))
    assert (again.agent_id, again.role) == (first.agent_id, "agent")


# --------------------------------------------------------------------- item 2: Sybil agents


def test_one_token_registers_one_agent_by_default(make_aggregator, store):
    agg = make_aggregator(min_agents=1, fraction=1.0)
    token = store.create_token("site-a")
    first = agg.register("site-a", token)
    for index in range(3):
        refused = refusal_of(agg.register, f"sybil-{index}", token)
        assert (refused.status, refused.code) == (403, "agent_limit")
        assert "--max-agents" in refused.detail
    assert agg.agents == (first.agent_id,)
    assert codes(store, agg.run_id) == ["agent_limit"] * 3
    assert agg.register("site-a", token).agent_id == first.agent_id  # its own name again is fine


def test_max_agents_admits_that_many_names(make_aggregator, store):
    agg = make_aggregator(min_agents=1)
    token = store.create_token("lab", max_agents=3)
    ids = {agg.register(f"lab-{i}", token).agent_id for i in range(3)}
    assert len(ids) == 3
    assert refusal_of(agg.register, "lab-3", token).code == "agent_limit"


# --------------------------------------------------------------------- item 3: revoked tokens


def test_a_revoked_agent_is_out_of_the_run_and_the_round_stops_waiting(make_aggregator, store, tmp_path):
    agg = make_aggregator(min_agents=2, threshold=1.0, deadline_seconds=600.0)
    a = agg.register("site-a", store.create_token("site-a"))
    b = agg.register("site-b", store.create_token("site-b"))
    assert sorted(agg.status()["selected"]) == sorted([a.agent_id, b.agent_id])
    agent_a = agg.authenticate(a.credential)
    assert agent_a is not None
    agg.submit_update(agent_a, payload(a.agent_id, 1, 1.0))
    assert agg.status()["round"] == 1  # waits for site-b
    with SqlStore.open_default(tmp_path / "home") as other_process:  # `fedloom token revoke`
        other_process.revoke_token("site-b")
    agg.tick()  # the clock has not moved: the round closes because nobody else is awaited
    status = agg.status()
    assert status["rounds_completed"] == 1
    assert status["agents"] == 1
    assert agg.authenticate(b.credential) is None
    assert agg.revoked_agents() == frozenset({b.agent_id})
    assert (status["state"], status["selected"]) == ("waiting_for_agents", [])  # min_agents=2: one is left


def test_a_revoked_agent_is_never_selected_again(make_aggregator, store):
    agg = make_aggregator(min_agents=1, threshold=1.0, max_rounds=5)
    regs = [agg.register(f"site-{i}", store.create_token(f"site-{i}")) for i in range(3)]
    store.revoke_token("site-2")
    agg.tick()
    for round_no in (1, 2, 3):
        selected = agg.status()["selected"]
        assert regs[2].agent_id not in selected
        for reg in regs[:2]:
            if reg.agent_id in selected:
                agent = agg.authenticate(reg.credential)
                assert agent is not None
                agg.submit_update(agent, payload(reg.agent_id, round_no, 1.0))
        assert agg.status()["rounds_completed"] == round_no


def test_a_restarted_aggregator_leaves_revoked_agents_out(make_aggregator, store):
    agg = make_aggregator(min_agents=2, threshold=1.0)
    a = agg.register("site-a", store.create_token("site-a"))
    agg.register("site-b", store.create_token("site-b"))
    store.revoke_token("site-b")
    agg.close()
    restarted = make_aggregator(min_agents=2, threshold=1.0)
    assert restarted.agents == (a.agent_id,)
    status = restarted.status()
    assert status["agents"] == 1


# --------------------------------------------------------------------- item 4: num_samples dominance


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_inflated_sample_count_is_refused(make_aggregator, store, mode):
    fields = {"mode": mode, "buffer_size": 2} if mode == "async" else {}
    agg = make_aggregator(initial=BN_INIT, min_agents=2, max_num_samples=10_000, **fields)
    honest = agg.register("honest", store.create_token("honest"), num_samples=100)
    greedy = agg.register("greedy", store.create_token("greedy"))
    honest_agent, greedy_agent = agg.authenticate(honest.credential), agg.authenticate(greedy.credential)
    assert honest_agent is not None and greedy_agent is not None
    attack = payload(greedy.agent_id, 1, n=2**62, weights=bn_weights(1e6, 2**40))
    refused = refusal_of(agg.submit_update, greedy_agent, attack)
    assert (refused.status, refused.code) == (422, "bad_num_samples")
    assert "max_num_samples is 10000" in refused.detail
    over_declared = payload(honest.agent_id, 1, n=101, weights=bn_weights(2.0, 7))
    refused = refusal_of(agg.submit_update, honest_agent, over_declared)
    assert refused.code == "bad_num_samples" and "declared 100" in refused.detail
    assert codes(store, agg.run_id) == ["bad_num_samples", "bad_num_samples"]
    agg.submit_update(honest_agent, payload(honest.agent_id, 1, n=100, weights=bn_weights(2.0, 7)))
    agg.submit_update(greedy_agent, payload(greedy.agent_id, 1, n=100, weights=bn_weights(4.0, 9)))
    model, _ = from_bytes(agg.global_model_bytes("latest")[0])
    np.testing.assert_allclose(model["bn.running_mean"], np.full(3, 3.0))  # an equal-weight mean, not 1e6
    assert model["bn.running_mean"].dtype == np.float64
    assert model["bn.num_batches_tracked"].shape == ()


def test_a_declared_size_over_the_maximum_is_refused_at_registration(make_aggregator, store):
    agg = make_aggregator(max_num_samples=1000)
    refused = refusal_of(agg.register, "site-a", store.create_token("site-a"), num_samples=2**62)
    assert (refused.status, refused.code) == (422, "bad_num_samples")
    assert "max_num_samples" in refused.detail
    assert agg.agents == ()
    assert codes(store, agg.run_id) == ["bad_num_samples"]


def test_the_register_endpoint_takes_a_declared_size(make_aggregator, store):
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    from fedloom.server.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    agg = make_aggregator(min_agents=1)
    with TestClient(create_app(agg, background_tick=False)) as client:
        token = store.create_token("site-a")
        for bad in (0, -3, 2**63, "many"):
            response = client.post(
                "/v1/agents/register", json={"name": "site-a", "join_token": token, "num_samples": bad}
            )
            assert (response.status_code, response.json()["error"]) == (422, "invalid_request")
            assert "num_samples" in response.json()["detail"]
        answer = client.post("/v1/agents/register", json={"name": "site-a", "join_token": token, "num_samples": 50})
        assert answer.status_code == 200, answer.text
        headers = {"Authorization": f"Bearer {answer.json()['credential']}", "Content-Type": "application/octet-stream"}
        agent_id = answer.json()["agent_id"]
        over = client.post("/v1/updates", content=payload(agent_id, 1, n=51), headers=headers)
        assert (over.status_code, over.json()["error"]) == (422, "bad_num_samples")
        assert client.post("/v1/updates", content=payload(agent_id, 1, n=50), headers=headers).status_code == 200
    assert [c.num_samples for c in store.list_clients(agg.run_id)] == [50]
