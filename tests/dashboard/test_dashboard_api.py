"""The dashboard's JSON API over a real SQLite store: credentials, shapes, bounds, model bytes."""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from fedloom.core.serialization import from_bytes
from fedloom.dashboard import api as api_module
from fedloom.dashboard import join_token_verifier, secret_verifier
from fedloom.dashboard.api import MAX_MATRIX_CLIENTS, MAX_MATRIX_ROUNDS
from fedloom.dashboard.standalone import standalone_app
from fedloom.store import SqlStore

with warnings.catch_warnings():
    # Starlette 1.x would rather run its TestClient on the httpx2 fork; httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = "flu_test-secret"


def bn_model(step: int) -> dict[str, np.ndarray]:
    """The shapes real models have: a BatchNorm's 0-d int64 counter, float64, huge and tiny values."""
    return {
        "conv.weight": np.full((4, 3, 3, 3), 0.5 + step, dtype=np.float32),
        "bn.running_mean": np.array([1e30, -1e-30, 0.0, 3.0], dtype=np.float64),
        "bn.num_batches_tracked": np.array(step * 10, dtype=np.int64),
        "scale": np.array(2.5, dtype=np.float32),
    }


def make_run(store: SqlStore, clients: int = 3, rounds: int = 4, name: str = "demo") -> str:
    run_id = store.create_run(name, "simulation", {"rounds": rounds + 2, "clients": clients}, seed=1)
    ids = [f"c{i}" for i in range(clients)]
    store.register_clients(run_id, [(c, 10) for c in ids])
    store.save_global_model(run_id, 0, bn_model(0), 0)
    for r in range(1, rounds + 1):
        store.open_round(run_id, r, ids[:2])
        store.save_local_model(run_id, r, ids[0], bn_model(r), 10, {"loss": 1.0 / r})
        store.record_rejection(run_id, r, ids[1], "invalid_weights", f"client c1 sent NaN in round {r}")
        store.close_round(run_id, r, num_updates=1, num_samples=10)
        metrics = {"accuracy": 0.5 + r / 10, "loss": 2.0 / r, "train_loss": 3.0 / r, "train_accuracy": 0.4 + r / 10}
        store.record_metrics(run_id, r, metrics)
        store.record_metrics(run_id, r, {"accuracy": 0.3 + r / 20}, scope="client", client_id=ids[0])
        store.save_global_model(run_id, r, bn_model(r), 10)
    store.record_metrics(run_id, rounds, {"loss_nan": math.nan})
    return run_id


def client(store: SqlStore, secret: str = SECRET) -> TestClient:
    return TestClient(standalone_app(store, secret_verifier(secret)), headers={"Authorization": f"Bearer {secret}"})


def test_every_api_call_needs_the_credential_but_the_page_does_not(store: SqlStore) -> None:
    run_id = make_run(store)
    anonymous = TestClient(standalone_app(store, secret_verifier(SECRET)))
    paths = ("runs", f"runs/{run_id}/series", f"runs/{run_id}/models/1/download")
    for path in (f"/dashboard/api/{p}" for p in paths):
        answer = anonymous.get(path)
        assert answer.status_code == 401, path
        assert answer.json()["error"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert anonymous.get(path, headers={"Authorization": "Bearer flu_wrong"}).status_code == 401
        assert anonymous.get(path, headers={"Authorization": f"Basic {SECRET}"}).status_code == 401
    page = anonymous.get("/dashboard/")
    assert page.status_code == 200 and "<title>fedloom dashboard</title>" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: every asset is served from here
    for name in ("charts.js", "api.js", "pages.js", "app.js", "style.css"):
        asset = anonymous.get(f"/dashboard/static/{name}")
        assert asset.status_code == 200 and asset.content
        assert "https://" not in asset.text and "@import" not in asset.text
    assert anonymous.get("/dashboard/static/..%2Fapi.py").status_code == 404
    assert anonymous.get("/dashboard/static/auth.py").status_code == 404


def test_admin_token_reads_agent_token_is_forbidden_revoked_is_unauthorized(store: SqlStore) -> None:
    make_run(store)
    admin = store.create_token("ops", role="admin")
    agent = store.create_token("site-1", role="agent")
    app = TestClient(standalone_app(store, join_token_verifier(store)))
    assert app.get("/dashboard/api/runs", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    refused = app.get("/dashboard/api/runs", headers={"Authorization": f"Bearer {agent}"})
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    store.revoke_token("ops")
    assert app.get("/dashboard/api/runs", headers={"Authorization": f"Bearer {admin}"}).status_code == 401


def test_an_address_that_keeps_guessing_is_slowed_down(store: SqlStore) -> None:
    app = TestClient(standalone_app(store, secret_verifier(SECRET)))
    guess = {"Authorization": "Bearer flu_guess"}
    codes = [app.get("/dashboard/api/runs", headers=guess).status_code for _ in range(40)]
    assert codes[0] == 401 and codes[-1] == 429


def test_runs_list_and_run_detail(store: SqlStore) -> None:
    run_id = make_run(store)
    runs = client(store).get("/dashboard/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == [run_id]
    row = runs[0]
    assert row["rounds_done"] == 4 and row["rounds_planned"] == 6 and row["status"] == "running"
    assert row["best_accuracy"] == pytest.approx(0.9)
    detail = client(store).get(f"/dashboard/api/runs/{run_id[:8]}").json()
    assert detail["config"] == {"rounds": 6, "clients": 3} and detail["id"] == run_id
    missing = client(store).get("/dashboard/api/runs/ffffffff")
    assert missing.status_code == 404 and "no run" in missing.json()["detail"]


def test_series_splits_train_from_evaluation_and_nan_is_null(store: SqlStore) -> None:
    run_id = make_run(store)
    doc = client(store).get(f"/dashboard/api/runs/{run_id}/series").json()
    assert [p["round"] for p in doc["rounds"]] == [1, 2, 3, 4]
    first = doc["rounds"][0]
    assert first["eval"] == {"accuracy": pytest.approx(0.6), "loss": 2.0}
    assert first["train"] == {"train_loss": 3.0, "train_accuracy": pytest.approx(0.5)}
    assert first["num_updates"] == 1 and first["num_samples"] == 10 and first["seconds"] >= 0
    assert doc["rounds"][3]["eval"]["loss_nan"] is None
    assert doc["truncated"] is False


def test_participation_marks_contributed_refused_and_selected(store: SqlStore) -> None:
    run_id = make_run(store)
    doc = client(store).get(f"/dashboard/api/runs/{run_id}/participation").json()
    assert doc["clients"] == ["c0", "c1", "c2"] and doc["rounds"] == [1, 2, 3, 4]
    assert doc["cells"] == ["cccc", "rrrr", "...."]
    assert doc["truncated"] is False and doc["total_clients"] == 3


def test_participation_of_ten_thousand_clients_is_capped_and_says_so(store: SqlStore) -> None:
    run_id = store.create_run("big", "simulation", {"rounds": 300}, seed=0)
    ids = [f"client-{i:05d}" for i in range(10_000)]
    store.register_clients(run_id, [(c, 1) for c in ids])
    for r in range(1, MAX_MATRIX_ROUNDS + 11):
        store.open_round(run_id, r, ids[:3])
        store.close_round(run_id, r)
    answer = client(store).get(f"/dashboard/api/runs/{run_id}/participation")
    doc = answer.json()
    assert len(doc["clients"]) == MAX_MATRIX_CLIENTS and doc["total_clients"] == 10_000
    assert len(doc["rounds"]) == MAX_MATRIX_ROUNDS and doc["rounds"][-1] == MAX_MATRIX_ROUNDS + 10
    assert doc["total_rounds"] == MAX_MATRIX_ROUNDS + 10 and doc["truncated"] is True
    assert len(answer.content) < 100_000
    assert client(store).get(f"/dashboard/api/runs/{run_id}/participation?clients=100000").status_code == 422


def test_pages_of_client_metrics_rejections_and_system(store: SqlStore) -> None:
    run_id = make_run(store)
    api = client(store)
    clients = api.get(f"/dashboard/api/runs/{run_id}/clients?limit=2&offset=1").json()
    assert clients["total"] == 4 and [r["round"] for r in clients["rows"]] == [2, 3] and clients["truncated"]
    assert clients["rows"][0] == {"round": 2, "client_id": "c0", "name": "accuracy", "value": pytest.approx(0.4)}
    latest = api.get(f"/dashboard/api/runs/{run_id}/clients?limit=2&newest=true").json()
    assert [r["round"] for r in latest["rows"]] == [3, 4] and latest["truncated"] and latest["total"] == 4
    rejections = api.get(f"/dashboard/api/runs/{run_id}/rejections?limit=3").json()
    assert rejections["total"] == 4 and len(rejections["rows"]) == 3 and rejections["truncated"]
    newest = rejections["rows"][0]
    assert (newest["round"], newest["client_id"], newest["code"]) == (4, "c1", "invalid_weights")
    assert "NaN in round 4" in newest["reason"]
    system = api.get(f"/dashboard/api/runs/{run_id}/system").json()
    assert system["rows"] == [] and system["total"] == 0
    assert api.get(f"/dashboard/api/runs/{run_id}/clients?limit=100000").status_code == 422


def test_model_lineage_and_download_bytes_are_the_stored_blob(store: SqlStore) -> None:
    run_id = make_run(store)
    api = client(store)
    models = api.get(f"/dashboard/api/runs/{run_id}/models").json()["models"]
    assert [m["round"] for m in models] == [0, 1, 2, 3, 4] and all(m["downloadable"] for m in models)
    stored = {m.round: m for m in store.list_global_models(run_id)}
    for m in models:
        assert m["sha256"] == stored[m["round"]].sha256
        answer = api.get(f"/dashboard/api/runs/{run_id}/models/{m['round']}/download")
        assert answer.status_code == 200
        blob = store._blobs.get(stored[m["round"]].blob_key)  # type: ignore[union-attr]
        assert answer.content == blob and hashlib.sha256(answer.content).hexdigest()
        assert answer.headers["X-Fedloom-Sha256"] == m["sha256"]
    weights, _ = from_bytes(api.get(f"/dashboard/api/runs/{run_id}/models/3/download").content)
    assert weights["bn.num_batches_tracked"].dtype == np.int64 and weights["bn.num_batches_tracked"].shape == ()
    assert int(weights["bn.num_batches_tracked"]) == 30 and weights["bn.running_mean"][0] == 1e30
    assert api.get(f"/dashboard/api/runs/{run_id}/models/99/download").status_code == 404


def test_download_file_name_of_an_odd_run_name_is_a_plain_header(store: SqlStore) -> None:
    run_id = make_run(store, rounds=1, name='süß "x"\r\nSet-Cookie: a=b')
    answer = client(store).get(f"/dashboard/api/runs/{run_id}/models/1/download")
    assert answer.status_code == 200
    disposition = answer.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="s____x___Set-Cookie__a_b-{run_id[:8]}-round1.safetensors"'
    assert "set-cookie" not in answer.headers


def test_agents_of_a_deployment_with_rounds_joined_and_refusals(store: SqlStore) -> None:
    run_id = store.create_run("fed", "deployment", {"rounds": {"max_rounds": 3}}, seed=0)
    token = store.verify_join_token(store.create_token("site", role="agent", max_agents=2))
    assert token is not None
    a, _ = store.register_agent(run_id, "site-1", token)
    b, _ = store.register_agent(run_id, "site-2", token)
    for r in (1, 2):
        store.open_round(run_id, r, [a.id, b.id])
        store.save_local_model(run_id, r, a.id, bn_model(r), 5, {})
        store.close_round(run_id, r, num_updates=1, num_samples=5)
    store.record_rejection(run_id, 2, b.id, "wrong_round", "late")
    doc = client(store).get(f"/dashboard/api/agents?run={run_id}").json()
    rows = {row["name"]: row for row in doc["agents"]}
    assert rows["site-1"]["rounds_joined"] == 2 and rows["site-1"]["refusals"] == 0
    assert rows["site-2"]["rounds_joined"] == 0 and rows["site-2"]["refusals"] == 1
    assert rows["site-1"]["role"] == "agent"
    assert client(store).get(f"/dashboard/api/runs/{run_id}").json()["rounds_planned"] == 3


def test_compare_draws_one_metric_for_several_runs(store: SqlStore) -> None:
    first, second = make_run(store, rounds=3, name="a"), make_run(store, rounds=2, name="b")
    doc = client(store).get(f"/dashboard/api/compare?ids={first[:8]},{second}&metric=loss").json()
    assert doc["metric"] == "loss"
    assert [r["name"] for r in doc["runs"]] == ["a", "b"]
    assert doc["runs"][0]["points"] == [[1, 2.0], [2, 1.0], [3, pytest.approx(2 / 3)]]
    assert len(doc["runs"][1]["points"]) == 2
    too_many = ",".join([first] * 9)
    assert client(store).get(f"/dashboard/api/compare?ids={too_many}").status_code == 422


def test_series_keeps_the_most_recent_rounds_and_says_it_was_cut(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = make_run(store, rounds=5)
    monkeypatch.setattr(api_module, "MAX_SERIES_ROUNDS", 2)
    doc = client(store).get(f"/dashboard/api/runs/{run_id}/series").json()
    assert [p["round"] for p in doc["rounds"]] == [4, 5] and doc["truncated"] is True
    assert doc["rounds"][0]["eval"]["loss"] == pytest.approx(0.5)
    rounds, total = store.recent_rounds(run_id, 2, with_selected=False)
    assert total == 5 and [r.selected for r in rounds] == [(), ()]
    rounds, _ = store.recent_rounds(run_id, 2, with_selected=True)
    assert [r.selected for r in rounds] == [("c0", "c1"), ("c0", "c1")]


def test_a_dp_run_shows_its_current_epsilon(store: SqlStore) -> None:
    plain = make_run(store, name="plain")
    private = store.create_run(
        "dp", "simulation", {"strategy": {"aggregator": {"name": "dp_mean", "privacy": {"mode": "central"}}}}, seed=0
    )
    for r, epsilon in ((1, 0.9), (2, 1.4)):
        store.open_round(private, r, ["c0"])
        metrics = {"privacy/epsilon": epsilon, "privacy/epsilon_without_sampling": 2.5 * epsilon, "privacy/delta": 1e-5}
        store.record_metrics(private, r, metrics)
        store.close_round(private, r, num_updates=1, num_samples=10)
    store.record_metrics(private, 2, {"privacy/target_epsilon": 1.5, "privacy/target_epsilon_reached": 1.0})
    api = client(store)
    assert api.get(f"/dashboard/api/runs/{plain}").json()["privacy"] is None
    shown = api.get(f"/dashboard/api/runs/{private}").json()["privacy"]
    assert shown == {
        "mode": "central",
        "epsilon": 1.4,
        "epsilon_without_sampling": 3.5,
        "delta": 1e-5,
        "round": 2,
        "target_epsilon": 1.5,
        "stopped_at_target": True,
        "noise_reproducible": False,
    }
    page = api.get("/dashboard/static/pages.js").text
    assert "privacyLine(run.privacy)" in page and "stopped: the next round would exceed the target ε" in page


def test_a_dp_sgd_run_shows_its_worst_client_epsilon(store: SqlStore) -> None:
    plain = make_run(store, name="plain")
    private = store.create_run("dp-sgd", "simulation", {"dp_sgd": True}, seed=0)
    for r, epsilon in ((1, 3.0), (2, 4.5)):
        store.open_round(private, r, ["c0"])
        store.record_metrics(private, r, {"privacy/dp_sgd_epsilon": epsilon, "privacy/dp_sgd_delta": 1e-6})
        store.close_round(private, r, num_updates=1, num_samples=10)
    api = client(store)
    assert api.get(f"/dashboard/api/runs/{plain}").json()["sample_privacy"] is None
    assert api.get(f"/dashboard/api/runs/{private}").json()["sample_privacy"] == {
        "round": 2,
        "epsilon": 4.5,
        "delta": 1e-6,
    }
    assert "samplePrivacyLine(run.sample_privacy)" in api.get("/dashboard/static/pages.js").text
