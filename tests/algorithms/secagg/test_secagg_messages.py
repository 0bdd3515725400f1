"""Hostile input: every message's JSON form is checked field by field, and the server and the
clients refuse messages from unknown ids, other rounds, duplicates and forged relays."""

import base64
import copy

import numpy as np
import pytest
from secagg_helpers import layout_for, local_updates, model_like

from fedloom.algorithms.secagg.client import SecAggClient
from fedloom.algorithms.secagg.fields import SecAggMessageError
from fedloom.algorithms.secagg.messages import (
    KeysMessage,
    KeysRelay,
    MaskedInput,
    SharesMessage,
    SharesRelay,
    UnmaskMessage,
    UnmaskRequest,
)
from fedloom.algorithms.secagg.server import SecAggServerRound
from fedloom.core.errors import ValidationError


def _round(count=5, seed=0, round=1):
    rng = np.random.default_rng(seed)
    global_w = model_like(rng)
    settings, layout = layout_for(global_w, threshold=3)
    updates = local_updates(global_w, rng, count)
    names = sorted(updates)
    server = SecAggServerRound(round, names, settings, seed, layout)
    clients = {c: SecAggClient(c, round, names, settings, seed, layout) for c in names}
    return server, clients, names, updates


def _to_share_stage(server, clients, names):
    for c in names:
        server.receive_keys(clients[c].advertise_keys())
    server.close_stage()


def _to_collect_stage(server, clients, names):
    _to_share_stage(server, clients, names)
    for c in names:
        server.receive_shares(clients[c].share_keys(server.keys_for(c)))
    server.close_stage()


def test_every_message_round_trips_through_json():
    server, clients, names, updates = _round()
    _to_collect_stage(server, clients, names)
    relay = server.keys_for(names[0])
    assert len(relay.keys) == 4
    assert KeysRelay.from_json(relay.to_json()) == relay
    assert KeysMessage.from_json(relay.keys[0].to_json()) == relay.keys[0]
    relay_s = server.shares_for(names[0])
    assert SharesRelay.from_json(relay_s.to_json()) == relay_s
    u = updates[names[0]]
    masked = clients[names[0]].masked_input(u.delta, u.num_samples, relay_s)
    back = MaskedInput.from_json(masked.to_json())
    np.testing.assert_array_equal(back.words, masked.words)
    request = UnmaskRequest(1, tuple(names), ())
    assert UnmaskRequest.from_json(request.to_json()) == request
    answer = clients[names[0]].unmask(request)
    assert UnmaskMessage.from_json(answer.to_json()) == answer


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o.update(round="1"), "round"),
        (lambda o: o.update(round=True), "round"),
        (lambda o: o.update(round=0), "round"),
        (lambda o: o.update(client_id=""), "client_id"),
        (lambda o: o.update(client_id="x" * 200), "client_id"),
        (lambda o: o.update(client_id=7), "client_id"),
        (lambda o: o.update(cipher_public="not base64!!"), "cipher_public"),
        (lambda o: o.update(cipher_public=_b64(b"\x01" * 31)), "cipher_public"),
        (lambda o: o.update(mask_public=_b64(b"\x01" * 33)), "mask_public"),
        (lambda o: o.update(extra=1), "keys"),
        (lambda o: o.pop("mask_public"), "keys"),
    ],
)
def test_a_hostile_keys_message_is_refused_by_field(change, field):
    good = KeysMessage(1, "c00", b"\x01" * 32, b"\x02" * 32).to_json()
    bad = copy.deepcopy(good)
    change(bad)
    with pytest.raises(SecAggMessageError) as info:
        KeysMessage.from_json(bad)
    assert info.value.field == field
    assert isinstance(info.value, ValidationError)


def test_hostile_shares_masked_and_unmask_json_is_refused_by_field():
    sealed = _b64(b"\x00" * 160)
    with pytest.raises(SecAggMessageError, match=r"shares\['c01'\]") as info:
        SharesMessage.from_json({"round": 1, "sender": "c00", "shares": {"c01": _b64(b"\x00" * 159)}})
    assert (
        SharesMessage.from_json({"round": 1, "sender": "c00", "shares": {"c01": sealed}}).shares["c01"] == b"\0" * 160
    )
    with pytest.raises(SecAggMessageError) as info:
        SharesMessage.from_json({"round": 1, "sender": "c00", "shares": ["c01"]})
    assert info.value.field == "shares"
    with pytest.raises(SecAggMessageError) as info:
        MaskedInput.from_json({"round": 1, "client_id": "c00", "words": _b64(b"\x00" * 12)})
    assert info.value.field == "words"
    with pytest.raises(SecAggMessageError) as info:
        MaskedInput.from_json({"round": 1, "client_id": "c00", "words": "@@@@"})
    assert info.value.field == "words"
    with pytest.raises(SecAggMessageError) as info:
        UnmaskRequest.from_json({"round": 1, "survivors": ["a", "a"], "dropped": []})
    assert info.value.field == "survivors"
    with pytest.raises(SecAggMessageError) as info:
        UnmaskMessage.from_json(
            {"round": 1, "client_id": "a", "self_mask_shares": {"b": _b64(b"1" * 65)}, "key_shares": {}}
        )
    assert "self_mask_shares" in info.value.field


def test_the_server_refuses_unknown_ids_other_rounds_duplicates_and_wrong_stages():
    server, clients, names, _ = _round()
    keys = clients[names[0]].advertise_keys()
    server.receive_keys(keys)
    cases = [
        (keys, "client_id", "already answered"),
        (KeysMessage(2, names[1], b"\x05" * 32, b"\x06" * 32), "round", "is 2"),
        (KeysMessage(1, "intruder", b"\x05" * 32, b"\x06" * 32), "client_id", "not selected"),
        (KeysMessage(1, names[1], keys.cipher_public, b"\x06" * 32), "cipher_public", "repeats"),
    ]
    for message, field, words in cases:
        with pytest.raises(SecAggMessageError, match=words) as info:
            server.receive_keys(message)
        assert info.value.field == field
    with pytest.raises(SecAggMessageError, match="stage") as info:
        server.receive_masked(MaskedInput(1, names[0], np.zeros(server.layout.length, np.uint64)))
    assert info.value.field == "stage"


def test_the_server_refuses_shares_to_non_neighbours_and_wrong_length_vectors():
    server, clients, names, _ = _round()
    _to_share_stage(server, clients, names)
    message = clients[names[0]].share_keys(server.keys_for(names[0]))
    short = SharesMessage(1, names[0], dict(list(message.shares.items())[:-1]))
    with pytest.raises(SecAggMessageError, match="exactly the neighbours"):
        server.receive_shares(short)
    server.receive_shares(message)
    for c in names[1:]:
        server.receive_shares(clients[c].share_keys(server.keys_for(c)))
    server.close_stage()
    with pytest.raises(SecAggMessageError, match="must hold") as info:
        server.receive_masked(MaskedInput(1, names[0], np.zeros(3, np.uint64)))
    assert info.value.field == "words"


def test_a_client_refuses_relays_from_another_round_forged_or_swapped_ciphertexts():
    server, clients, names, updates = _round()
    _to_collect_stage(server, clients, names)
    me, u = clients[names[0]], updates[names[0]]
    relay = server.shares_for(names[0])
    sender, sealed = next(iter(relay.shares.items()))
    with pytest.raises(SecAggMessageError, match="is 2"):
        me.masked_input(u.delta, u.num_samples, SharesRelay(2, names[0], relay.shares))
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(SecAggMessageError, match="does not open"):
        me.masked_input(u.delta, u.num_samples, SharesRelay(1, names[0], {**relay.shares, sender: flipped}))
    # a ciphertext the server takes from another pair (sealed for someone else) does not open either
    other = server.shares_for(names[1])
    stolen_sender = next(s for s in other.shares if s != names[0] and s in relay.shares and s != sender)
    swapped = {**relay.shares, sender: other.shares[stolen_sender]}
    with pytest.raises(SecAggMessageError, match="does not open"):
        me.masked_input(u.delta, u.num_samples, SharesRelay(1, names[0], swapped))
    with pytest.raises(SecAggMessageError, match="not a neighbour"):
        me.masked_input(u.delta, u.num_samples, SharesRelay(1, names[0], {**relay.shares, "intruder": sealed}))
    with pytest.raises(SecAggMessageError, match="is for"):
        me.masked_input(u.delta, u.num_samples, SharesRelay(1, names[1], relay.shares))


def test_a_replayed_ciphertext_from_another_round_does_not_open():
    """Same clients, same keys would be needed for a replay to work; the associated data binds
    the round, so even a ciphertext sealed under the right key for round 1 fails in round 2."""
    from fedloom.algorithms.secagg import crypto
    from fedloom.algorithms.secagg.keys import associated_data

    key = b"\x09" * 32
    sealed = crypto.seal(key, b"share", associated_data(1, "a", "b"))
    assert crypto.open_sealed(key, sealed, associated_data(1, "a", "b")) == b"share"
    for ad in (associated_data(2, "a", "b"), associated_data(1, "b", "a"), associated_data(1, "a", "c")):
        with pytest.raises(crypto.InvalidTag):
            crypto.open_sealed(key, sealed, ad)


def test_a_keys_relay_naming_a_non_neighbour_or_another_round_is_refused():
    _, clients, names, _ = _round(count=8)
    _, clients2, _, _ = _round(count=8)
    me = clients[names[0]]
    me.advertise_keys()
    strangers = set(names) - me.graph.neighbours(names[0]) - {names[0]}
    others = [clients2[c].advertise_keys() for c in names]
    if strangers:
        stranger = next(k for k in others if k.client_id in strangers)
        with pytest.raises(SecAggMessageError, match="not a new neighbour"):
            me.share_keys(KeysRelay(1, (stranger,)))
    with pytest.raises(SecAggMessageError, match="round"):
        me.share_keys(KeysRelay(1, (KeysMessage(3, names[1], b"\x01" * 32, b"\x02" * 32),)))
