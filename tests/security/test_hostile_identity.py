"""Impostors against a real aggregator: another site's name or token, a revoked site, another
run's credential, another agent's client id, replayed and duplicated uploads.

Each refusal must leave the victim untouched (same agent id, its credential still
working) and the run closing rounds, before and after a restart.
"""

from __future__ import annotations

from security_helpers import Federation, error_code, update_bytes, wait_until

REFUSED_IDENTITY = {403, 409}


def test_registering_another_sites_name_with_ones_own_token_is_refused(federation: Federation) -> None:
    admin, victim = federation.open_run("site-a")
    intruder_token = federation.issue_tokens("site-b")["site-b"]
    takeover = federation.register("site-a", intruder_token)
    assert takeover.status_code in REFUSED_IDENTITY, (
        f"identity takeover answered {takeover.status_code}: {takeover.text}"
    )
    assert "credential" not in takeover.json()
    # the victim keeps its identity and its credential
    assert federation.get("/v1/status", victim.credential).status_code == 200
    victim_task = federation.get("/v1/task", victim.credential)
    assert victim_task.status_code == 200 and victim_task.json()["state"] == "train", victim_task.text
    federation.assert_still_works([admin, victim])


def test_one_token_cannot_register_many_agents(federation: Federation) -> None:
    """A Sybil attack: one site's token registering agent after agent to outvote honest sites."""
    admin, site = federation.open_run("site-b")
    token = federation.tokens["site-b"]
    answers = [federation.register(f"site-b-{i}", token) for i in range(5)]
    codes = [a.status_code for a in answers]
    assert all(code in REFUSED_IDENTITY for code in codes), f"extra agents from one token answered {codes}"
    assert federation.status()["agents"] == 2, "the refused registrations added agents"
    federation.assert_still_works([admin, site])


def test_revoked_sites_agent_is_no_longer_selected(federation: Federation) -> None:
    federation.start(threshold=0.5)
    admin, revoked = federation.open_run("site-1")
    assert sorted(federation.status()["selected"]) == sorted([admin.id, revoked.id])
    federation.revoke_token("site-1")  # what `fedloom token revoke --name site-1` does
    assert error_code(federation.get("/v1/status", revoked.credential)) == (401, "unauthorized")
    assert federation.upload(revoked, update_bytes(revoked.id, 1)).status_code == 401
    assert federation.upload(admin, update_bytes(admin.id, 1)).status_code == 200
    federation.wait_for_rounds(1)
    selected = federation.status()["selected"]
    assert revoked.id not in selected, f"round 2 selected the revoked agent: {selected}"
    federation.assert_still_works([admin])


def test_credential_of_another_run_is_refused(federation: Federation) -> None:
    (old,) = federation.open_run()
    federation.stop()
    federation.start(name="another-run")  # same database, a new run
    for path in ("/v1/status", "/v1/task", "/v1/models/global/latest"):
        assert error_code(federation.get(path, old.credential)) == (401, "unauthorized"), path
    assert federation.upload(old, update_bytes(old.id, 1)).status_code == 401


def test_upload_naming_another_agent_is_refused(federation: Federation) -> None:
    admin, victim = federation.open_run("site-1")
    forged = update_bytes(victim.id, 1)
    assert error_code(federation.upload(admin, forged)) == (403, "client_id_mismatch")
    assert ("client_id_mismatch", admin.id) in federation.rejections()
    federation.assert_still_works([admin, victim])


def test_duplicate_upload_in_the_same_round_is_refused(federation: Federation) -> None:
    admin, other = federation.open_run("site-1")
    body = update_bytes(admin.id, 1)
    assert federation.upload(admin, body).status_code == 200
    assert error_code(federation.upload(admin, body)) == (409, "duplicate")
    assert federation.status()["received"] == 1
    assert federation.upload(other, update_bytes(other.id, 1)).status_code == 200
    federation.wait_for_rounds(1)
    federation.assert_still_works([admin, other])


def test_replayed_upload_of_a_closed_round_is_refused(federation: Federation) -> None:
    (admin,) = federation.open_run()
    body = update_bytes(admin.id, 1)
    assert federation.upload(admin, body).status_code == 200
    federation.wait_for_rounds(1)
    assert error_code(federation.upload(admin, body)) == (409, "wrong_round")
    federation.restart()
    assert error_code(federation.upload(admin, body)) == (409, "wrong_round"), "a restart made the old upload new"
    federation.assert_still_works()


def test_non_admin_cannot_replace_the_initial_model(federation: Federation) -> None:
    admin, site = federation.open_run("site-1")
    body = update_bytes(site.id, 1)
    assert error_code(federation.post("/v1/models/initial", body, site.credential)) == (403, "forbidden")
    assert error_code(federation.post("/v1/models/initial", body, admin.credential)) == (409, "model_exists")
    federation.assert_still_works([admin, site])


def test_replaced_credential_stops_working(federation: Federation) -> None:
    """Registering again (same name, own token) rotates the credential: a stolen old one is dead."""
    admin, site = federation.open_run("site-1")
    again = federation.register("site-1", federation.tokens["site-1"])
    assert again.status_code == 200 and again.json()["agent_id"] == site.id, again.text
    wait_until(lambda: federation.get("/v1/status", site.credential).status_code == 401, 5, "the old credential to die")
    site.credential = again.json()["credential"]
    federation.assert_still_works([admin, site])
