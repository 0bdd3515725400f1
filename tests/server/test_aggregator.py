"""The Aggregator state manager, called directly (the HTTP layer is tested in test_aggregator_app.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from aggregator_helpers import INIT, agent_of, join, payload, weights_of

from fedloom.core import from_bytes, to_bytes
from fedloom.core.errors import ConfigError
from fedloom.server.aggregator import Aggregator, RequestRefusedError, load_initial_model
from fedloom.server.async_rounds import staleness_weight


def three_agents(make_aggregator, store, **fields):
    agg = make_aggregator(min_agents=3, **fields)
    regs = [join(agg, store, f"site-{i}") for i in range(3)]
    agents = [store.get_agent(r.agent_id) for r in regs]
    return agg, agents


def upload(agg, agent, round, value, n=10, **kw):
    return agg.submit_update(agent, payload(agent.id, round, value, n, **kw))


def refused(agg, agent, body):
    with pytest.raises(RequestRefusedError) as info:
        agg.submit_update(agent, body)
    return info.value


def global_of(agg, round):
    weights, _ = from_bytes(agg.global_model_bytes(round)[0])
    return weights


# --------------------------------------------------------------------- a full run


def test_round_opens_once_enough_agents_registered(make_aggregator, store):
    agg = make_aggregator(min_agents=2)
    first = join(agg, store, "site-a")
    assert agg.status()["state"] == "waiting_for_agents"
    assert agg.task_for(first.agent_id).state == "wait"
    join(agg, store, "site-b")
    status = agg.status()
    assert status["state"] == "collecting" and status["round"] == 1 and len(status["selected"]) == 2
    task = agg.task_for(first.agent_id)
    assert task.state == "train" and task.round == 1 and task.global_round == 1
    assert task.config is not None and task.config["round"] == 1 and task.deadline is not None


def test_full_sync_run_aggregates_the_weighted_mean(make_aggregator, store):
    agg, agents = three_agents(make_aggregator, store)
    samples = [10, 30, 60]
    for round_no in (1, 2, 3):
        for i, agent in enumerate(agents):
            assert agg.task_for(agent.id).state == "train"
            assert upload(agg, agent, round_no, value=round_no * (i + 1), n=samples[i]) == round_no
            if i < 2:
                assert agg.task_for(agent.id).state == "wait"
        expected = sum(n * round_no * (i + 1) for i, n in enumerate(samples)) / sum(samples)
        model = global_of(agg, round_no + 1)
        np.testing.assert_allclose(model["w"], np.full((2, 3), expected), rtol=1e-6)
        np.testing.assert_allclose(model["b"], np.full(3, -expected), rtol=1e-6)
    assert agg.status()["state"] == "finished" and agg.status()["rounds_completed"] == 3
    assert all(agg.task_for(a.id).state == "finished" for a in agents)
    assert store.get_run(agg.run_id).status == "finished"
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0, 1, 2, 3]
    assert [r.status for r in store.list_rounds(agg.run_id)] == ["closed"] * 3
    assert len(store.list_local_models(agg.run_id)) == 9
    # deployment keeps every local model's tensors
    np.testing.assert_array_equal(store.load_local_model(agg.run_id, 2, agents[1].id)["w"], np.full((2, 3), 4.0))
    # the client metrics are averaged by samples and recorded per round
    loss = dict(store.metric_series(agg.run_id, "loss"))
    assert loss[1] == pytest.approx((10 * 1 + 30 * 2 + 60 * 3) / 100)


def test_global_model_rounds_latest_and_unknown(make_aggregator, store):
    agg, agents = three_agents(make_aggregator, store)
    body, sha = agg.global_model_bytes(1)
    weights, header = from_bytes(body)
    assert header.sha256 == sha and header.round == 0 and all(np.all(v == 0) for v in weights.values())
    assert agg.global_model_bytes("latest")[1] == sha
    for agent in agents:
        upload(agg, agent, 1, 2.0)
    assert agg.global_model_bytes("latest")[1] == agg.global_model_bytes(2)[1] != sha
    assert agg.global_model_bytes(1)[1] == sha  # older models stay downloadable
    for bad in (0, 3, 99):
        with pytest.raises(RequestRefusedError) as info:
            agg.global_model_bytes(bad)
        assert info.value.status == 404


def test_threshold_closes_a_round_early(make_aggregator, store):
    agg = make_aggregator(min_agents=4, threshold=0.5)
    agents = [store.get_agent(join(agg, store, f"s{i}").agent_id) for i in range(4)]
    upload(agg, agents[0], 1, 1.0)
    assert agg.current_round == 1
    upload(agg, agents[1], 1, 3.0)
    assert agg.current_round == 2
    np.testing.assert_allclose(global_of(agg, 2)["w"], 2.0)
    # the late agents are now told to train round 2; their round-1 updates are refused
    assert refused(agg, agents[2], payload(agents[2].id, 1, 5.0)).code == "wrong_round"


# --------------------------------------------------------------------- refusals


def snapshot(agg, store):
    return (agg.status(), len(store.list_local_models(agg.run_id)), len(store.list_global_models(agg.run_id)))


NAN = weights_of(1.0)
NAN["w"][0, 1] = np.nan


@pytest.mark.parametrize(
    ("make_body", "code", "status", "words"),
    [
        (
            lambda aid: payload(aid, 1, weights={"w": np.zeros((3, 2), np.float32), "b": INIT["b"]}),
            "invalid_weights",
            422,
            "'w'",
        ),
        (lambda aid: payload(aid, 1, weights={"w": INIT["w"]}), "invalid_weights", 422, "missing"),
        (
            lambda aid: payload(aid, 1, weights={**INIT, "w": INIT["w"].astype(np.float64)}),
            "invalid_weights",
            422,
            "dtype",
        ),
        (lambda aid: payload(aid, 1, weights=NAN), "invalid_weights", 422, "NaN"),
        (lambda aid: b"\x00garbage bytes, not a model", "invalid_payload", 400, "header"),
        (lambda aid: payload(aid, 1)[:-3], "invalid_payload", 400, ""),
        (lambda aid: payload("ag_someone_else", 1), "client_id_mismatch", 403, "ag_someone_else"),
        (lambda aid: payload(aid, 1, n=0), "invalid_payload", 400, "num_samples"),
        (lambda aid: payload(aid, 1, metrics={"loss": "low"}), "invalid_payload", 400, "loss"),
        (lambda aid: to_bytes(INIT, client_id=aid, num_samples=5), "invalid_payload", 400, "round"),
        (lambda aid: payload(aid, 2), "wrong_round", 409, "round 2"),
    ],
)
def test_bad_uploads_are_refused_recorded_and_change_nothing(make_aggregator, store, make_body, code, status, words):
    agg, agents = three_agents(make_aggregator, store)
    upload(agg, agents[1], 1, 1.0)
    before = snapshot(agg, store)
    error = refused(agg, agents[0], make_body(agents[0].id))
    assert (error.code, error.status) == (code, status)
    assert words in error.detail
    assert snapshot(agg, store) == before
    rejection = store.list_rejections(agg.run_id)[-1]
    assert (rejection.code, rejection.client_id) == (code, agents[0].id)
    # the agent can still send a good update afterwards
    upload(agg, agents[0], 1, 1.0)
    assert agg.status()["received"] == 2


def test_oversized_upload_is_refused_before_parsing(make_aggregator, store):
    agg, agents = three_agents(make_aggregator, store, max_upload_mb=0.0001)  # 104 bytes
    error = refused(agg, agents[0], payload(agents[0].id, 1))
    assert (error.code, error.status) == ("payload_too_large", 413)
    assert store.list_rejections(agg.run_id)[-1].code == "payload_too_large"
    assert agg.status()["received"] == 0


def test_replay_duplicate_and_late_updates_are_refused(make_aggregator, store):
    agg, agents = three_agents(make_aggregator, store)
    body = payload(agents[0].id, 1, 1.0)
    agg.submit_update(agents[0], body)
    assert refused(agg, agents[0], body).code == "duplicate"
    for agent in agents[1:]:
        upload(agg, agent, 1, 1.0)
    before = snapshot(agg, store)
    error = refused(agg, agents[0], body)  # a replay of round 1 while round 2 is open
    assert (error.code, error.status) == ("wrong_round", 409)
    assert snapshot(agg, store) == before
    codes = [r.code for r in store.list_rejections(agg.run_id)]
    assert codes == ["duplicate", "wrong_round"]


def test_unselected_agent_is_refused(make_aggregator, store):
    agg = make_aggregator(min_agents=2, fraction=0.5)
    agents = [store.get_agent(join(agg, store, f"s{i}").agent_id) for i in range(4)]
    first = set(agg.status()["selected"])  # round 1 opened when two agents had registered
    assert first == {agents[0].id, agents[1].id}
    assert agg.task_for(agents[3].id).state == "wait"
    for agent in agents[:2]:
        upload(agg, agent, 1, 1.0)
    selected = set(agg.status()["selected"])
    assert len(selected) == 2  # max(min_agents, floor(0.5 * 4))
    outsider = next(a for a in agents if a.id not in selected)
    assert agg.task_for(outsider.id).state == "wait"
    error = refused(agg, outsider, payload(outsider.id, 2))
    assert (error.code, error.status) == ("not_selected", 409)


def test_upload_before_any_model_is_refused(make_aggregator, store):
    agg = make_aggregator(initial=None)
    agent = store.get_agent(join(agg, store, "s").agent_id)
    assert agg.task_for(agent.id).state == "wait" and agg.status()["state"] == "waiting_for_model"
    assert refused(agg, agent, payload(agent.id, 1)).code == "round_closed"
    with pytest.raises(RequestRefusedError) as info:
        agg.global_model_bytes("latest")
    assert info.value.status == 404


# --------------------------------------------------------------------- initial model


def test_admin_uploads_the_initial_model_once(make_aggregator, store):
    agg = make_aggregator(initial=None)
    admin = store.get_agent(join(agg, store, "admin", role="admin").agent_id)
    worker = store.get_agent(join(agg, store, "worker").agent_id)
    body = to_bytes(weights_of(0.5), client_id=admin.id)
    with pytest.raises(RequestRefusedError) as info:
        agg.upload_initial(worker, body)
    assert (info.value.status, info.value.code) == (403, "forbidden")
    sha = agg.upload_initial(admin, body)
    assert agg.global_model_bytes(1)[1] == sha
    assert agg.task_for(worker.id).state == "train"
    with pytest.raises(RequestRefusedError) as info:
        agg.upload_initial(admin, body)
    assert (info.value.status, info.value.code) == (409, "model_exists")
    assert [r.code for r in store.list_rejections(agg.run_id)] == ["forbidden", "model_exists"]


def test_initial_model_file_fedloom_or_raw_safetensors(tmp_path, make_aggregator):
    from safetensors.numpy import save_file

    fedloom_file = tmp_path / "init.safetensors"
    fedloom_file.write_bytes(to_bytes(weights_of(2.0)))
    raw_file = tmp_path / "raw.safetensors"
    save_file(weights_of(3.0), str(raw_file))
    np.testing.assert_array_equal(load_initial_model(fedloom_file)["w"], 2.0)
    np.testing.assert_array_equal(load_initial_model(raw_file)["b"], -3.0)
    agg = make_aggregator(initial=None, initial_model=str(raw_file))
    np.testing.assert_array_equal(global_of(agg, 1)["w"], 3.0)
    (tmp_path / "junk").write_bytes(b"junk")
    for path, words in ((tmp_path / "missing", "cannot be read"), (tmp_path / "junk", "not a safetensors")):
        with pytest.raises(ConfigError, match=words) as info:
            load_initial_model(path)
        assert "[run] initial_model" in str(info.value)


# --------------------------------------------------------------------- deadlines


def test_deadline_aggregates_what_arrived(make_aggregator, store, clock):
    agg, agents = three_agents(make_aggregator, store, deadline_seconds=30.0, min_updates=2)
    upload(agg, agents[0], 1, 1.0, n=10)
    agg.tick(clock.advance(31))
    assert agg.current_round == 1  # one update is below min_updates: extended
    upload(agg, agents[1], 1, 4.0, n=30)
    agg.tick(clock.advance(10))
    assert agg.current_round == 1  # the extended deadline has not passed yet
    agg.tick(clock.advance(25))
    assert agg.current_round == 2
    np.testing.assert_allclose(global_of(agg, 2)["w"], (10 * 1 + 30 * 4) / 40)
    closed = store.list_rounds(agg.run_id)[0]
    assert (closed.status, closed.num_updates, closed.num_samples) == ("closed", 2, 40)
    assert agg.task_for(agents[2].id).round == 2


def test_deadline_abandon_records_the_round_and_keeps_the_model(make_aggregator, store, clock):
    agg, agents = three_agents(make_aggregator, store, deadline_policy="abandon")
    upload(agg, agents[0], 1, 7.0)
    sha = agg.global_model_bytes(1)[1]
    agg.tick(clock.advance(61))
    assert agg.current_round == 2
    rounds = store.list_rounds(agg.run_id)
    assert [(r.round, r.status, r.num_updates) for r in rounds] == [(1, "abandoned", 1), (2, "open", 0)]
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0]
    assert agg.global_model_bytes(2)[1] == sha  # round 2 starts from the same model
    task = agg.task_for(agents[0].id)
    assert (task.state, task.round, task.global_sha256) == ("train", 2, sha)
    for agent in agents:
        upload(agg, agent, 2, 2.0)
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0, 2]
    assert agg.global_model_bytes(2)[1] == sha and agg.global_model_bytes(3)[1] != sha


def test_deadline_extend_waits_for_the_threshold(make_aggregator, store, clock):
    agg, agents = three_agents(make_aggregator, store, deadline_policy="extend")
    for agent in agents[:2]:
        upload(agg, agent, 1, 1.0)
    first = agg.task_for(agents[2].id).deadline
    agg.tick(clock.advance(61))
    assert agg.current_round == 1
    assert agg.task_for(agents[2].id).deadline > first
    upload(agg, agents[2], 1, 1.0)
    assert agg.current_round == 2


# --------------------------------------------------------------------- async mode


def test_async_buffer_aggregates_with_staleness_weights(make_aggregator, store):
    agg = make_aggregator(mode="async", buffer_size=2, staleness_exponent=0.5, min_agents=3)
    a, b, c = (store.get_agent(join(agg, store, f"s{i}").agent_id) for i in range(3))
    assert all(agg.task_for(x.id).state == "train" for x in (a, b, c))
    upload(agg, a, 1, 1.0, n=10)
    assert agg.task_for(a.id).state == "wait" and agg.status()["received"] == 1
    upload(agg, b, 1, 3.0, n=30)  # second arrival: version 1
    np.testing.assert_allclose(global_of(agg, 2)["w"], (10 * 1 + 30 * 3) / 40)
    assert agg.task_for(a.id).state == "train" and agg.task_for(a.id).round == 2
    # c still trains from version 0 (round 1): staleness 1; a from version 1: staleness 0
    upload(agg, c, 1, 5.0, n=20)
    upload(agg, a, 2, 2.0, n=10)
    wc, wa = staleness_weight(20, 1, 0.5), staleness_weight(10, 0, 0.5)
    assert wc == pytest.approx(20 / np.sqrt(2)) and wa == 10
    np.testing.assert_allclose(global_of(agg, 3)["w"], (wc * 5 + wa * 2) / (wc + wa), rtol=1e-6)
    assert [m.round for m in store.list_global_models(agg.run_id)] == [0, 1, 2]
    assert refused(agg, c, payload(c.id, 1, 1.0)).code == "duplicate"
    assert refused(agg, c, payload(c.id, 4, 1.0)).code == "wrong_round"
    assert agg.status()["mode"] == "async"


def test_async_run_finishes_at_max_rounds(make_aggregator, store):
    agg = make_aggregator(mode="async", buffer_size=1, max_rounds=2)
    agent = store.get_agent(join(agg, store, "s").agent_id)
    upload(agg, agent, 1, 1.0)
    upload(agg, agent, 2, 1.0)
    assert agg.task_for(agent.id).state == "finished"
    assert store.get_run(agg.run_id).status == "finished"
    assert refused(agg, agent, payload(agent.id, 3)).code == "round_closed"


# --------------------------------------------------------------------- long-poll


def test_long_poll_returns_as_soon_as_a_round_opens(make_aggregator, store):
    agg = make_aggregator(min_agents=2)
    first = join(agg, store, "a")

    def register_later():
        time.sleep(0.2)
        join(agg, store, "b")

    async def poll():
        started = time.monotonic()
        task = await agg.wait_for_change(first.agent_id, 10)
        return task, time.monotonic() - started

    thread = threading.Thread(target=register_later)
    thread.start()
    task, waited = asyncio.run(poll())
    thread.join()
    assert task.state == "train" and task.round == 1
    assert 0.1 < waited < 3


def test_long_poll_times_out_with_the_current_task(make_aggregator, store):
    agg = make_aggregator(min_agents=2)
    first = join(agg, store, "a")
    started = time.monotonic()
    task = asyncio.run(agg.wait_for_change(first.agent_id, 0.3))
    assert task.state == "wait"
    assert 0.25 < time.monotonic() - started < 2


def test_long_poll_ignores_changes_that_do_not_concern_the_agent(make_aggregator, store):
    agg = make_aggregator(min_agents=3)
    regs = [join(agg, store, f"s{i}") for i in range(3)]
    upload(agg, store.get_agent(regs[0].agent_id), 1, 1.0)  # s0 has uploaded: its task is now "wait"
    other = store.get_agent(regs[1].agent_id)

    def upload_later():
        time.sleep(0.1)
        upload(agg, other, 1, 1.0)  # changes the other agent's task only

    thread = threading.Thread(target=upload_later)
    thread.start()
    started = time.monotonic()
    task = asyncio.run(agg.wait_for_change(regs[0].agent_id, 0.6))
    thread.join()
    assert task.state == "wait" and time.monotonic() - started > 0.5


def test_long_poll_answers_an_actionable_task_at_once(make_aggregator, store):
    agg = make_aggregator(min_agents=2)
    regs = [join(agg, store, f"s{i}") for i in range(2)]
    started = time.monotonic()
    task = asyncio.run(agg.wait_for_change(regs[0].agent_id, 5))
    assert task.state == "train" and task.round == 1 and time.monotonic() - started < 1


def test_close_marks_the_run_interrupted_and_wakes_polls(make_aggregator, store):
    agg = make_aggregator(min_agents=2)
    first = join(agg, store, "a")
    agg.close()
    assert store.get_run(agg.run_id).status == "interrupted"
    started = time.monotonic()
    asyncio.run(agg.wait_for_change(first.agent_id, 5))
    assert time.monotonic() - started < 1


def test_run_config_must_match_to_resume(make_aggregator, store):
    agg = make_aggregator()
    join(agg, store, "a")
    with pytest.raises(ConfigError, match=r"\[run\] mode"):
        make_aggregator(mode="async")
    with pytest.raises(ConfigError, match=r"\[run\] seed"):
        make_aggregator(seed=5)
    assert isinstance(make_aggregator(max_rounds=5), Aggregator)


def test_a_finished_run_may_stop_once_every_agent_has_the_final_model(make_aggregator, store, clock):
    agg = make_aggregator(max_rounds=1, min_agents=2, linger_seconds=30.0)
    a, b = (join(agg, store, name).agent_id for name in ("site-a", "site-b"))
    for agent_id in (a, b):
        agg.submit_update(agent_of(store, agent_id), payload(agent_id, 1))
    assert agg.status()["state"] == "finished" and not agg.may_stop()
    agg.global_model_bytes("latest", a)
    assert not agg.may_stop()  # site-b has not fetched the final model yet
    agg.global_model_bytes("latest", b)
    assert agg.may_stop()


def test_a_finished_run_stops_after_its_linger_time_anyway(make_aggregator, store, clock):
    agg = make_aggregator(max_rounds=1, min_agents=1, linger_seconds=30.0)
    agent_id = join(agg, store, "site-a").agent_id
    agg.submit_update(agent_of(store, agent_id), payload(agent_id, 1))
    assert not agg.may_stop(clock.now + 29.0)
    assert agg.may_stop(clock.now + 30.0)


def test_an_upload_is_hashed_once_and_stored_as_received(make_aggregator, store, monkeypatch):
    import fedloom.core.serialization as serialization
    import fedloom.core.update as update_module
    import fedloom.store.models as store_models

    agg = make_aggregator(min_agents=2, max_rounds=2)
    agent_id = join(agg, store, "site-a").agent_id
    join(agg, store, "site-b")  # the round stays open: only the upload's own hashing is counted
    body = payload(agent_id, 1, 2.5)
    hashed: list[int] = []
    real_hash = serialization.content_hash

    def counting(weights):
        hashed.append(1)
        return real_hash(weights)

    for module in (serialization, update_module, store_models):
        monkeypatch.setattr(module, "content_hash", counting)
    agg.check_may_upload(agent_id)
    hashed.clear()
    agg.submit_update(agent_of(store, agent_id), body)
    assert hashed == [1]  # from_bytes verifies it; the report, the row and the blob reuse it
    (row,) = store.list_local_models(agg.run_id, round=1)
    assert store._blobs.get(row.blob_key) == body  # the bytes the agent sent, not a re-serialisation
