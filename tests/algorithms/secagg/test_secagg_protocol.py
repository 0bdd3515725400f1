"""A whole secure-aggregation round: the unmasked aggregate equals plain FedAvg (of the
survivors) within the stated quantisation bound, dropouts below the threshold are
recovered, above it the round is refused, and a client never reveals both shares of one
neighbour."""

import numpy as np
import pytest
from secagg_helpers import fedavg_delta, layout_for, local_updates, model_like

from fedloom.algorithms.secagg.client import SecAggClient
from fedloom.algorithms.secagg.fields import SecAggMessageError
from fedloom.algorithms.secagg.local_round import run_local_round
from fedloom.algorithms.secagg.messages import UnmaskRequest
from fedloom.algorithms.secagg.ring import error_bound
from fedloom.algorithms.secagg.server import BELOW_THRESHOLD, SecAggFailure, SecAggResult, SecAggServerRound, Stage


def _check_equal(result, updates, names, clip, bits):
    assert isinstance(result, SecAggResult), getattr(result, "reason", result)
    assert result.contributors == tuple(sorted(names))
    assert result.total_weight == sum(updates[c].num_samples for c in names)
    expected = fedavg_delta(updates, list(names))
    bound = error_bound(clip, bits)
    for key, value in expected.items():
        got = result.mean_delta[key]
        assert got.shape == value.shape
        if updates[names[0]].delta[key].dtype.kind == "i":
            np.testing.assert_allclose(got, value, rtol=0, atol=1e-9)  # integers travel exactly
        else:
            assert np.max(np.abs(got - value)) <= bound * (1 + 1e-9) + 1e-12, key


@pytest.mark.parametrize("seed", range(12))
def test_aggregate_equals_fedavg_within_the_bound_over_many_seeds(seed):
    rng = np.random.default_rng(seed)
    global_w = model_like(rng)
    bits = [8, 16, 24, 32][seed % 4]
    neighbours = [None, 4, 6][seed % 3]
    settings, layout = layout_for(global_w, clip_range=0.5, bits=bits, neighbours=neighbours, threshold=0.6)
    updates = local_updates(global_w, rng, 9)
    out = run_local_round(3, updates, settings, seed, layout)
    _check_equal(out.result, updates, sorted(updates), 0.5, bits)


def test_the_bound_is_tight_enough_to_mean_something():
    """With 8 bits the error is visible but within c/(2^bits-1); the plain sum would be far off."""
    rng = np.random.default_rng(1)
    global_w = model_like(rng)
    settings, layout = layout_for(global_w, clip_range=0.5, bits=8, threshold=0.6)
    updates = local_updates(global_w, rng, 5)
    out = run_local_round(1, updates, settings, 1, layout)
    assert isinstance(out.result, SecAggResult)
    expected = fedavg_delta(updates, sorted(updates))
    worst = max(np.max(np.abs(out.result.mean_delta[k] - v)) for k, v in expected.items())
    assert 0 < worst <= error_bound(0.5, 8)


@pytest.mark.parametrize("stage", ["advertise", "share", "collect", "unmask"])
@pytest.mark.parametrize("seed", range(3))
def test_dropouts_at_each_stage_below_threshold_give_the_survivors_fedavg(stage, seed):
    rng = np.random.default_rng(100 + seed)
    global_w = model_like(rng)
    settings, layout = layout_for(global_w, clip_range=0.5, bits=24, neighbours=6, threshold=3)
    updates = local_updates(global_w, rng, 10)
    dropped = set(rng.choice(sorted(updates), 2, replace=False))
    out = run_local_round(2, updates, settings, seed, layout, {stage: dropped})
    assert out.server.dropped == {c: stage for c in dropped}
    # a client dropping at unmask already sent its masked input: it is still in the sum
    contributors = sorted(updates) if stage == "unmask" else sorted(set(updates) - dropped)
    _check_equal(out.result, updates, contributors, 0.5, 24)


def test_dropouts_at_every_stage_at_once():
    rng = np.random.default_rng(7)
    global_w = model_like(rng)
    settings, layout = layout_for(global_w, clip_range=0.5, bits=20, threshold=5)  # complete graph: 11 neighbours each
    updates = local_updates(global_w, rng, 12)
    drops = {"advertise": {"c00"}, "share": {"c03"}, "collect": {"c05", "c07"}, "unmask": {"c09"}}
    out = run_local_round(4, updates, settings, 7, layout, drops)
    survivors = sorted(set(updates) - {"c00", "c03", "c05", "c07"})
    _check_equal(out.result, updates, survivors, 0.5, 20)


@pytest.mark.parametrize("stage", ["advertise", "share", "collect", "unmask"])
def test_dropouts_beyond_the_threshold_refuse_the_round(stage):
    rng = np.random.default_rng(3)
    global_w = model_like(rng)
    settings, layout = layout_for(global_w, clip_range=0.5, bits=16, threshold=0.8)  # 6 clients: t = 4
    updates = local_updates(global_w, rng, 6)
    out = run_local_round(5, updates, settings, 3, layout, {stage: {"c00", "c01", "c02"}})
    failure = out.result
    assert isinstance(failure, SecAggFailure)
    assert failure.code == BELOW_THRESHOLD
    assert failure.threshold == 4
    assert failure.stage == stage
    assert f"stage {stage!r}" in failure.reason and "threshold 4" in failure.reason
    assert out.server.stage is Stage.FAILED


def test_a_graph_with_fewer_neighbours_than_the_threshold_is_refused_at_the_start():
    rng = np.random.default_rng(0)
    global_w = model_like(rng)
    settings, layout = layout_for(global_w, threshold=5, neighbours=4)
    out = run_local_round(1, local_updates(global_w, rng, 8), settings, 0, layout)
    assert isinstance(out.result, SecAggFailure)
    assert "fewer than the threshold 5" in out.result.reason


def _clients_through_collect(count=6, seed=0):
    rng = np.random.default_rng(seed)
    global_w = model_like(rng)
    settings, layout = layout_for(global_w, threshold=3)
    updates = local_updates(global_w, rng, count)
    names = sorted(updates)
    server = SecAggServerRound(1, names, settings, seed, layout)
    clients = {c: SecAggClient(c, 1, names, settings, seed, layout) for c in names}
    for c in names:
        server.receive_keys(clients[c].advertise_keys())
    server.close_stage()
    for c in names:
        server.receive_shares(clients[c].share_keys(server.keys_for(c)))
    server.close_stage()
    for c in names:
        u = updates[c]
        server.receive_masked(clients[c].masked_input(u.delta, u.num_samples, server.shares_for(c)))
    return server, clients, names


def test_a_client_refuses_to_reveal_both_shares_of_one_neighbour():
    _, clients, names = _clients_through_collect()
    me, other = clients[names[0]], names[1]
    first = me.unmask(UnmaskRequest(1, tuple(names), ()))
    assert other in first.self_mask_shares
    survivors = tuple(n for n in names if n != other)
    with pytest.raises(SecAggMessageError, match="both shares") as info:
        me.unmask(UnmaskRequest(1, survivors, (other,)))
    assert info.value.field == "dropped"
    # asking the same thing again (a retried request) is answered identically
    assert me.unmask(UnmaskRequest(1, tuple(names), ())) == first


def test_a_client_refuses_a_survivor_set_below_the_threshold_and_contradictions():
    _, clients, names = _clients_through_collect()
    me = clients[names[0]]
    with pytest.raises(SecAggMessageError, match="below the threshold"):
        me.unmask(UnmaskRequest(1, (names[0], names[1]), tuple(names[2:])))
    with pytest.raises(SecAggMessageError, match="names survivors too"):
        me.unmask(UnmaskRequest(1, tuple(names), (names[1],)))
    with pytest.raises(SecAggMessageError, match="does not name"):
        me.unmask(UnmaskRequest(1, tuple(names[1:]), ()))
    with pytest.raises(SecAggMessageError, match="not selected"):
        me.unmask(UnmaskRequest(1, (*names, "intruder"), ()))


def _unmask_all(server, clients, names):
    server.close_stage()
    request = server.unmask_request()
    return {c: clients[c].unmask(request) for c in names}


@pytest.mark.parametrize("count", [4, 6])  # 4 clients: exactly t = 3 holders; 6: spare shares
def test_a_wrong_share_from_a_holder_refuses_the_round_instead_of_a_wrong_sum(count):
    import dataclasses

    from fedloom.algorithms.secagg import shamir

    server, clients, names = _clients_through_collect(count=count, seed=count)
    answers = _unmask_all(server, clients, names)
    liar = names[1]
    owner = next(iter(answers[liar].self_mask_shares))
    value = shamir.share_from_bytes(answers[liar].self_mask_shares[owner])
    forged = {**answers[liar].self_mask_shares, owner: shamir.share_to_bytes((value + 1) % shamir.PRIME)}
    answers[liar] = dataclasses.replace(answers[liar], self_mask_shares=forged)
    for c in names:
        server.receive_unmask(answers[c])
    server.close_stage()
    result = server.aggregate()
    assert isinstance(result, SecAggFailure), "a forged share must never give a sum"
    assert result.stage == "unmask"
