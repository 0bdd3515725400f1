"""Issue 11, secure aggregation in deployment: the protocol's state is in memory, so an
aggregator restarted mid-round abandons that round with a recorded reason (never a wrong
or half-unmasked model) and opens the next one with a fresh protocol state; stage
deadlines drop who did not answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aggregator_helpers import Clock, config, join

from fedloom.server.aggregator import Aggregator
from fedloom.server.secagg_rounds import SecAggRounds

pytest.importorskip("cryptography")

INIT = {"w": np.zeros((2, 3), np.float32), "bn.num_batches_tracked": np.array(3, np.int64)}


def secure(**fields):
    base = {"secure_aggregation": "on", "min_agents": 3, "stage_timeout_seconds": 10.0}
    return config(**{**base, **fields})


def advertise(agg, registration, index):
    from fedloom.algorithms.secagg.fields import encode

    body = {"round": agg.current_round, "client_id": registration.agent_id}
    body |= {"cipher_public": encode(bytes([index]) * 32), "mask_public": encode(bytes([index + 100]) * 32)}
    agent = agg.store.get_agent(registration.agent_id)
    agg.secagg_receive(agent, "advertise", json.dumps(body).encode())


def test_a_restart_mid_round_abandons_that_round_with_the_reason(store):
    clock = Clock()
    first = Aggregator(secure(), store, clock=clock, initial_weights=INIT)
    regs = [join(first, store, name) for name in ("site-a", "site-b", "site-c")]
    first.tick()
    assert first.status()["secagg_stage"] == "advertise" and first.current_round == 1
    advertise(first, regs[0], 1)
    # the process dies here; a new one on the same store resumes the run
    second = Aggregator(secure(), store, clock=clock)
    rounds = second._state.rounds
    assert isinstance(rounds, SecAggRounds)
    [refused] = [r for r in store.list_rejections(second.run_id) if r.code == "secagg_restarted"]
    assert refused.round == 1 and "restarted mid-round" in refused.reason
    assert store.list_rounds(second.run_id)[0].status == "abandoned"
    assert second.current_round == 2 and second.status()["secagg_stage"] == "advertise"
    assert [m.round for m in store.list_global_models(second.run_id)] == [0]  # no model from round 1
    advertise(second, regs[0], 1)  # round 2 has its own protocol state: the key is new there


def test_a_stage_deadline_drops_who_did_not_answer(store):
    clock = Clock()
    agg = Aggregator(secure(), store, clock=clock, initial_weights=INIT)
    regs = [join(agg, store, name) for name in ("site-a", "site-b", "site-c")]
    agg.tick()
    advertise(agg, regs[0], 1)
    advertise(agg, regs[1], 2)
    agg.tick(clock.advance(9.0))
    assert agg.status()["secagg_stage"] == "advertise"  # before the deadline nobody is dropped
    agg.tick(clock.advance(1.5))
    assert agg.status()["secagg_stage"] == "share"
    assert agg.task_for(regs[2].agent_id).state == "wait"  # dropped: recorded when the round ends
    assert agg._state.rounds.protocol.dropped == {regs[2].agent_id: "advertise"}
    task = agg.task_for(regs[0].agent_id)
    assert task.state == "secagg" and task.secagg is not None and task.secagg["stage"] == "share"


def test_a_run_cannot_resume_with_secure_aggregation_switched(store):
    from fedloom.core.errors import ConfigError

    Aggregator(secure(), store, initial_weights=INIT)  # started with [secagg] on, then stopped
    with pytest.raises(ConfigError, match=r"\[secagg\] secure_aggregation = 'on'; it cannot resume with 'off'"):
        Aggregator(secure(secure_aggregation="off"), store)
