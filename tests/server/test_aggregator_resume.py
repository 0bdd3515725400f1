"""Crash safety: an aggregator rebuilt on the same database resumes exactly where the last one stopped.

The strongest test kills the aggregator (an exception no code catches, like SIGKILL
leaves no chance to react) just before each store write of a whole run in turn, builds
a fresh aggregator on the same database, lets the agents carry on, and checks that
every run ends with exactly one global model per round and the same final model as a
run that was never interrupted.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from aggregator_helpers import INIT, config, join, payload

from fedloom.core import from_bytes
from fedloom.core.errors import StoreError
from fedloom.server.aggregator import Aggregator, RequestRefusedError

WRITES = frozenset(
    {
        "create_run",
        "reopen_run",
        "finish_run",
        "register_agent",
        "register_client",
        "open_round",
        "close_round",
        "save_global_model",
        "save_local_model",
        "record_metrics",
        "record_rejection",
    }
)


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the aggregator catches it, so it gets no chance to clean up."""


class KillingStore:
    """A store proxy that dies just before its ``kill_at``-th write (0 = never)."""

    def __init__(self, store, kill_at=0):
        self._store = store
        self.kill_at = kill_at
        self.writes = 0

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if name not in WRITES:
            return attribute

        def write(*args, **kwargs):
            self.writes += 1
            if self.writes == self.kill_at:
                raise Killed(name)
            return attribute(*args, **kwargs)

        return write


def value_of(agent_index, round_no):
    return float(agent_index + 1) * round_no


def global_rounds(store, run_id):
    return [m.round for m in store.list_global_models(run_id)]


# --------------------------------------------------------------------- restart mid-round


def test_restart_mid_round_keeps_the_uploads_and_finishes_with_one_model_per_round(store, clock):
    cfg = config(min_agents=3)
    first = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    agents = [store.get_agent(join(first, store, f"site-{i}").agent_id) for i in range(3)]
    for i, agent in enumerate(agents):  # round 1 completes
        first.submit_update(agent, payload(agent.id, 1, value_of(i, 1), n=10 * (i + 1)))
    for i, agent in enumerate(agents[:2]):  # 2 of 3 uploads of round 2
        first.submit_update(agent, payload(agent.id, 2, value_of(i, 2), n=10 * (i + 1)))
    before = first.status()
    del first  # no close(): the process died

    second = Aggregator(cfg, store, clock=clock)  # no initial model needed: it is in the database
    assert second.resumed and second.run_id == before["run_id"]
    status = second.status()
    assert (status["round"], status["received"], status["selected"]) == (2, 2, before["selected"])
    assert [second.task_for(a.id).state for a in agents] == ["wait", "wait", "train"]
    with pytest.raises(RequestRefusedError, match="already sent"):  # the counted uploads stay counted
        second.submit_update(agents[0], payload(agents[0].id, 2, 9.0))
    second.submit_update(agents[2], payload(agents[2].id, 2, value_of(2, 2), n=30))
    expected = sum(10 * (i + 1) * value_of(i, 2) for i in range(3)) / 60
    weights, _ = from_bytes(second.global_model_bytes(3)[0])
    np.testing.assert_allclose(weights["w"], expected, rtol=1e-6)
    for i, agent in enumerate(agents):
        second.submit_update(agent, payload(agent.id, 3, value_of(i, 3)))
    assert store.get_run(second.run_id).status == "finished"
    assert global_rounds(store, second.run_id) == [0, 1, 2, 3]
    assert [r.status for r in store.list_rounds(second.run_id)] == ["closed"] * 3


def test_agents_keep_their_credentials_across_a_restart(store, clock):
    cfg = config(min_agents=1)
    first = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    registration = join(first, store, "site-a")
    first.close()
    assert store.get_run(first.run_id).status == "interrupted"
    second = Aggregator(cfg, store, clock=clock)
    assert store.get_run(second.run_id).status == "running"
    agent = second.authenticate(registration.credential)
    assert agent is not None and agent.id == registration.agent_id
    assert second.task_for(agent.id).state == "train"


def test_a_finished_run_is_not_resumed(store, clock):
    cfg = config(max_rounds=1)
    first = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    agent = store.get_agent(join(first, store, "a").agent_id)
    first.submit_update(agent, payload(agent.id, 1))
    assert store.get_run(first.run_id).status == "finished"
    second = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    assert not second.resumed and second.run_id != first.run_id


def test_resume_repairs_a_round_whose_model_was_saved_before_the_crash(store, clock):
    cfg = config(min_agents=2)
    killer = KillingStore(store)
    first = Aggregator(cfg, killer, clock=clock, initial_weights=INIT)
    agents = [store.get_agent(join(first, store, f"s{i}").agent_id) for i in range(2)]
    first.submit_update(agents[0], payload(agents[0].id, 1, 1.0, metrics={"loss": 0.5}))
    killer.kill_at = killer.writes + 3  # save_local_model, save_global_model, record_metrics: die at metrics
    with pytest.raises(Killed, match="record_metrics"):
        first.submit_update(agents[1], payload(agents[1].id, 1, 3.0, metrics={"loss": 1.5}))
    assert global_rounds(store, first.run_id) == [0, 1]
    assert store.list_rounds(first.run_id)[0].status == "open"

    second = Aggregator(cfg, store, clock=clock)
    assert global_rounds(store, second.run_id) == [0, 1]
    rounds = store.list_rounds(second.run_id)
    assert [(r.round, r.status) for r in rounds] == [(1, "closed"), (2, "open")]
    assert (rounds[0].num_updates, rounds[0].num_samples) == (2, 20)
    assert store.metric_series(second.run_id, "loss") == [(1, 1.0)]
    assert second.status()["round"] == 2


def test_async_restart_keeps_the_buffer(store, clock):
    cfg = config(mode="async", buffer_size=2)
    first = Aggregator(cfg, store, clock=clock, initial_weights=INIT)
    a, b, c = (store.get_agent(join(first, store, f"s{i}").agent_id) for i in range(3))
    first.submit_update(a, payload(a.id, 1, 1.0, n=10))
    first.submit_update(b, payload(b.id, 1, 3.0, n=30))  # version 1
    first.submit_update(a, payload(a.id, 2, 5.0, n=10))  # buffered
    second = Aggregator(cfg, store, clock=clock)
    assert second.status()["received"] == 1 and second.current_round == 2
    with pytest.raises(RequestRefusedError, match="already sent"):
        second.submit_update(a, payload(a.id, 2, 5.0, n=10))
    second.submit_update(c, payload(c.id, 1, 7.0, n=30))  # stale by one version
    stale = 30 * 2**-0.5
    weights, _ = from_bytes(second.global_model_bytes(3)[0])
    np.testing.assert_allclose(weights["w"], (10 * 5 + stale * 7) / (10 + stale), rtol=1e-6)
    assert global_rounds(store, second.run_id) == [0, 1, 2]


# --------------------------------------------------------------------- death at every write


def drive(make, names, deadline_round, clock):
    """Run a federation to the end, rebuilding the aggregator whenever it is killed.

    Agents behave like real ones: (re-)register when needed, train when told to, and
    treat ``duplicate``/``wrong_round`` answers as "already landed / moved on". Agent i
    sends ``value_of(i, round)`` with ``10 * (i + 1)`` samples. In ``deadline_round`` the
    last agent stays silent and the clock jumps past the deadline instead.
    """
    agg = None
    registrations = {}
    deaths = 0
    for _ in range(500):
        clock.now = time.time()
        try:
            if agg is None:
                agg = make()
            for name in names:
                if name not in registrations or agg.authenticate(registrations[name].credential) is None:
                    registrations[name] = agg.register(name, TOKENS[name])
            if agg.status()["state"] == "finished":
                return agg, deaths
            for i, name in enumerate(names):
                agent = agg.authenticate(registrations[name].credential)
                task = agg.task_for(agent.id)
                if task.state != "train" or (task.round == deadline_round and i == len(names) - 1):
                    continue
                try:
                    agg.submit_update(agent, payload(agent.id, task.round, value_of(i, task.round), n=10 * (i + 1)))
                except RequestRefusedError as exc:
                    assert exc.code in ("duplicate", "wrong_round", "round_closed"), exc
            # the clock follows real time (round opening times in the database are real), and
            # jumps past the deadline once the others have sent their updates of the silent round
            status = agg.status()
            silent = status["round"] == deadline_round and status["received"] == len(names) - 1
            clock.now = time.time() + (61 if silent else 0)
            agg.tick()
        except Killed:
            agg = None
            deaths += 1
    raise AssertionError("the run did not finish")


TOKENS: dict[str, str] = {}


def run_federation(store, clock, kill_at, deadline_round=None, policy="aggregate", mode="sync"):
    names = ["s0", "s1", "s2"]
    if not TOKENS or store.verify_join_token(TOKENS["s0"]) is None:
        TOKENS.clear()
        TOKENS.update({name: store.create_token(name) for name in names})
    killer = KillingStore(store, kill_at)
    cfg = config(min_agents=3, max_rounds=2, deadline_policy=policy, deadline_seconds=60.0, mode=mode)
    agg, deaths = drive(
        lambda: Aggregator(cfg, killer, clock=clock, initial_weights=INIT),
        names,
        deadline_round,
        clock,
    )
    return agg, killer.writes, deaths


def final_model(store, run_id):
    return store.load_global_model(run_id, global_rounds(store, run_id)[-1])


@pytest.mark.parametrize(
    ("deadline_round", "policy", "mode"),
    [(None, "aggregate", "sync"), (1, "aggregate", "sync"), (1, "abandon", "sync"), (None, "aggregate", "async")],
)
def test_killed_before_any_store_write_resumes_exactly(tmp_path, clock, deadline_round, policy, mode):
    from fedloom.store import SqlStore

    TOKENS.clear()
    with SqlStore.open_default(tmp_path / "reference") as reference:
        ref_agg, total_writes, deaths = run_federation(reference, clock, 0, deadline_round, policy, mode)
        assert deaths == 0
        expected = final_model(reference, ref_agg.run_id)
        expected_rounds = global_rounds(reference, ref_agg.run_id)
    assert expected_rounds == ([0, 2] if policy == "abandon" else [0, 1, 2])
    assert total_writes >= 15
    for kill_at in range(1, total_writes + 1):
        TOKENS.clear()
        with SqlStore.open_default(tmp_path / f"kill-{kill_at}") as store:
            agg, _, deaths = run_federation(store, clock, kill_at, deadline_round, policy, mode)
            assert deaths == 1, kill_at
            runs = store.list_runs()
            assert len(runs) == 1 and runs[0].status == "finished", kill_at
            assert global_rounds(store, agg.run_id) == expected_rounds, kill_at
            if mode == "sync":
                statuses = [r.status for r in store.list_rounds(agg.run_id)]
                expected_statuses = ["abandoned", "closed"] if policy == "abandon" else ["closed"] * 2
                assert statuses == expected_statuses, kill_at
                got = final_model(store, agg.run_id)
                for name in expected:
                    np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, err_msg=f"kill_at={kill_at}")
            else:  # arrival order (hence the model) depends on who was interrupted; the rule must hold
                check_async_versions(store, agg.run_id)


def check_async_versions(store, run_id, buffer_size=2, exponent=0.5):
    """Version v is the staleness-weighted mean of arrivals (v-1)*B .. v*B-1, staleness = v - their round."""
    arrivals = sorted(store.list_local_models(run_id), key=lambda m: m.id)
    for version in global_rounds(store, run_id)[1:]:
        chunk = arrivals[(version - 1) * buffer_size : version * buffer_size]
        weights = [m.num_samples * (1 + version - m.round) ** -exponent for m in chunk]
        models = [store.load_local_model(run_id, m.round, m.client_id)["w"] for m in chunk]
        expected = sum(w * x.astype(np.float64) for w, x in zip(weights, models, strict=True)) / sum(weights)
        np.testing.assert_allclose(store.load_global_model(run_id, version)["w"], expected, rtol=1e-6)


# --------------------------------------------------------------------- a failing database


class FailingStore(KillingStore):
    """Raises StoreError (a database error the aggregator handles) instead of dying."""

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if name != self.fail_on:
            return attribute

        def write(*args, **kwargs):
            if self.failures > 0:
                self.failures -= 1
                raise StoreError(f"{name} failed (test)")
            return attribute(*args, **kwargs)

        return write


def failing(store, fail_on, failures=1):
    proxy = FailingStore(store)
    proxy.fail_on, proxy.failures = fail_on, failures
    return proxy


def test_a_failed_local_model_write_refuses_the_upload_and_keeps_memory_in_step(store, clock):
    proxy = failing(store, "save_local_model", failures=0)
    agg = Aggregator(config(min_agents=2), proxy, clock=clock, initial_weights=INIT)
    a, b = (store.get_agent(join(agg, store, f"s{i}").agent_id) for i in range(2))
    proxy.failures = 1
    with pytest.raises(StoreError):
        agg.submit_update(a, payload(a.id, 1, 1.0))
    assert agg.status()["received"] == 0 and agg.task_for(a.id).state == "train"
    agg.submit_update(a, payload(a.id, 1, 1.0))  # the agent retries: accepted now
    agg.submit_update(b, payload(b.id, 1, 3.0))
    assert global_rounds(store, agg.run_id) == [0, 1]


def test_a_failed_global_model_write_is_retried_by_the_next_tick(store, clock):
    proxy = failing(store, "save_global_model", failures=0)
    agg = Aggregator(config(min_agents=2), proxy, clock=clock, initial_weights=INIT)
    a, b = (store.get_agent(join(agg, store, f"s{i}").agent_id) for i in range(2))
    agg.submit_update(a, payload(a.id, 1, 1.0))
    proxy.failures = 1
    assert agg.submit_update(b, payload(b.id, 1, 3.0)) == 1  # accepted; closing the round failed
    assert agg.status()["round"] == 1 and agg.status()["received"] == 2
    assert global_rounds(store, agg.run_id) == [0]
    agg.tick()
    assert agg.status()["round"] == 2
    assert global_rounds(store, agg.run_id) == [0, 1]
    weights, _ = from_bytes(agg.global_model_bytes(2)[0])
    np.testing.assert_allclose(weights["w"], 2.0)
