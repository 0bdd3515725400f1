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
from fedloom.core.update import ClientUpdate
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


def run_federation(store, clock, kill_at, deadline_round=None, policy="aggregate", mode="sync", strategy="fedavg"):
    names = ["s0", "s1", "s2"]
    if not TOKENS or store.verify_join_token(TOKENS["s0"]) is None:
        TOKENS.clear()
        TOKENS.update({name: store.create_token(name) for name in names})
    killer = KillingStore(store, kill_at)
    cfg = config(
        min_agents=3, max_rounds=2, deadline_policy=policy, deadline_seconds=60.0, mode=mode, strategy=strategy
    )
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
    ("deadline_round", "policy", "mode", "strategy"),
    [
        (None, "aggregate", "sync", "fedavg"),
        (1, "aggregate", "sync", "fedavg"),
        (1, "abandon", "sync", "fedavg"),
        (None, "aggregate", "async", "fedavg"),
        (None, "aggregate", "sync", "fedadam"),  # the optimiser's state is written with each global model
    ],
)
def test_killed_before_any_store_write_resumes_exactly(tmp_path, clock, deadline_round, policy, mode, strategy):
    from fedloom.store import SqlStore

    TOKENS.clear()
    with SqlStore.open_default(tmp_path / "reference") as reference:
        ref_agg, total_writes, deaths = run_federation(reference, clock, 0, deadline_round, policy, mode, strategy)
        assert deaths == 0
        expected = final_model(reference, ref_agg.run_id)
        expected_rounds = global_rounds(reference, ref_agg.run_id)
        expected_state = reference.load_server_state(ref_agg.run_id, expected_rounds[-1])
    assert (expected_state is None) == (strategy == "fedavg")
    assert expected_rounds == ([0, 2] if policy == "abandon" else [0, 1, 2])
    assert total_writes >= 15
    for kill_at in range(1, total_writes + 1):
        TOKENS.clear()
        with SqlStore.open_default(tmp_path / f"kill-{kill_at}") as store:
            agg, _, deaths = run_federation(store, clock, kill_at, deadline_round, policy, mode, strategy)
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
                state = store.load_server_state(agg.run_id, expected_rounds[-1])
                assert (state is None) == (expected_state is None), kill_at
                if state is not None and expected_state is not None:
                    assert state[1] == expected_state[1], kill_at
                    for name, value in expected_state[0].items():
                        np.testing.assert_allclose(state[0][name], value, rtol=1e-6, err_msg=f"kill_at={kill_at}")
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


# --------------------------------------------------------------------- the server optimiser's state

FEDADAM = {"min_agents": 2, "max_rounds": 4, "strategy": "fedadam", "server_lr": 0.1}


class ReadLog:
    """A store proxy that logs the rounds whose local models are loaded, and can hide the stored
    server-optimiser states (as a run recorded before schema version 4 has none)."""

    def __init__(self, store, hide_states=False):
        self._store = store
        self.hide_states = hide_states
        self.local_rounds_loaded = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def load_local_model(self, run_id, round, client_id):
        self.local_rounds_loaded.append(round)
        return self._store.load_local_model(run_id, round, client_id)

    def load_server_state(self, run_id, round):
        return None if self.hide_states else self._store.load_server_state(run_id, round)


def fedadam_run(store, clock, restarts=()):
    """Four FedAdam rounds of two agents; a fresh aggregator replaces the running one (whose memory is
    lost, as after SIGKILL) before agent i's upload of round r for every ``(r, i)`` in ``restarts``."""
    agg = Aggregator(config(**FEDADAM), store, clock=clock, initial_weights=INIT)
    agents = [store.get_agent(join(agg, store, f"site-{i}").agent_id) for i in range(2)]
    for number in range(1, 5):
        for i, agent in enumerate(agents):
            if (number, i) in restarts:
                agg = Aggregator(config(**FEDADAM), store, clock=clock)
                assert agg.resumed
            agg.submit_update(agent, payload(agent.id, number, value_of(i, number) - 2.5, n=10 * (i + 1)))
    assert store.get_run(agg.run_id).status == "finished"
    return [store.load_global_model(agg.run_id, n) for n in range(5)], store.load_server_state(agg.run_id, 4)


def assert_same_models(got, expected):
    for number, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert set(a) == set(b), number
        for name in a:
            assert a[name].tobytes() == b[name].tobytes(), (number, name)


def test_fedadam_restarted_mid_run_continues_from_its_stored_state_without_replaying(tmp_path, clock):
    from fedloom.store import SqlStore

    with SqlStore.open_default(tmp_path / "uninterrupted") as reference:
        expected, expected_state = fedadam_run(reference, clock)
    with SqlStore.open_default(tmp_path / "restarted") as store:
        log = ReadLog(store)
        got, state = fedadam_run(log, clock, restarts={(2, 0), (3, 1), (4, 0)})
    assert_same_models(got, expected)
    assert not np.array_equal(expected[4]["w"], expected[3]["w"])  # the optimiser moved the model
    assert state is not None and expected_state is not None and state[1] == expected_state[1] == 4
    assert_same_models([state[0]], [expected_state[0]])
    # only the open round's stored upload was read back (round 3, at the mid-round restart): no replay
    assert log.local_rounds_loaded == [3]


def test_a_run_recorded_without_stored_states_is_resumed_by_replaying_its_rounds(tmp_path, clock):
    from fedloom.store import SqlStore

    with SqlStore.open_default(tmp_path / "uninterrupted") as reference:
        expected, _ = fedadam_run(reference, clock)
    with SqlStore.open_default(tmp_path / "restarted") as store:
        log = ReadLog(store, hide_states=True)
        got, _ = fedadam_run(log, clock, restarts={(3, 0)})
    assert_same_models(got, expected)
    assert sorted(set(log.local_rounds_loaded)) == [1, 2]  # the fallback replayed rounds 1 and 2


def test_every_closed_round_stores_the_engines_optimiser_state_with_its_model(store, clock):
    from fedloom.algorithms.registry import build_strategy
    from fedloom.server.engine import RoundEngine
    from fedloom.server.recording import StoreRecorder

    run_id = store.create_run("engine", "simulation", {}, seed=0)
    strategy = build_strategy("fedadam", fraction=1.0, params={"server_lr": 0.1})
    model = {**INIT, "bn.num_batches_tracked": np.array(0, np.int64), "scale": np.array(1.0, np.float64)}
    engine = RoundEngine(strategy, model, recorder=StoreRecorder(store, run_id), max_rounds=2)
    engine.register_clients([("a", 10), ("b", 20)])
    for number in (1, 2):
        task = engine.open_round()
        for client, value in (("a", 1.0 * number), ("b", -3.0)):
            weights = {k: np.full_like(v, value) for k, v in task.global_weights.items()}
            engine.submit(ClientUpdate(client, number, weights, 10))
        outcome = engine.close_round()
        assert outcome.server_opt_state is engine.server_opt_state
        stored = store.load_server_state(run_id, number)
        assert stored is not None and stored[1] == number
        assert_same_models([stored[0]], [engine.server_opt_state.tensors])
