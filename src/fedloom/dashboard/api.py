"""The dashboard's read-only JSON API and its static page, as one FastAPI router over a store.

``fedloom server`` includes this router in the aggregator's app (the server package never
imports it: ``cli/server.py`` passes it in) and ``fedloom ui`` serves it alone over a store
of simulated runs. Every ``/dashboard/api`` route needs an admin credential (see
:mod:`fedloom.dashboard.auth`); the page and its assets need none, since they hold no data.
Routes are plain ``def`` so FastAPI runs their store reads in worker threads.

Every answer is bounded: lists take ``limit`` (capped) and ``offset``, the participation
matrix shows at most :data:`MAX_MATRIX_CLIENTS` clients by :data:`MAX_MATRIX_ROUNDS` rounds,
and each says when it was cut, so a run with 10,000 clients still answers in kilobytes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from fedloom.algorithms.dp.report import EPSILON, SHOWN, privacy_summary, sample_level_summary
from fedloom.algorithms.dp_sgd_settings import DELTA_METRIC as DP_SGD_DELTA
from fedloom.algorithms.dp_sgd_settings import EPSILON_METRIC as DP_SGD_EPSILON
from fedloom.core.errors import StoreError
from fedloom.core.records import METRIC_SCOPES, RunRecord
from fedloom.dashboard import views
from fedloom.dashboard.assets import asset_router
from fedloom.dashboard.auth import Verifier, require_admin
from fedloom.server.answers import STATUS_OF, RequestRefusedError
from fedloom.store import SqlStore

#: most runs one list answers
MAX_RUNS = 200
#: most rows one page of metrics or rejections answers
MAX_PAGE = 5000
#: the participation matrix's bounds (clients x most recent rounds)
MAX_MATRIX_CLIENTS = 200
MAX_MATRIX_ROUNDS = 200
#: most rounds a series answers (the most recent ones)
MAX_SERIES_ROUNDS = 2000
#: most server metric rows read for one series
MAX_SERIES_METRICS = 100_000
#: most runs one comparison draws
MAX_COMPARE = 8

#: what a download's file name keeps of a run name (a header value: ASCII without quotes)
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]
Newest = Annotated[bool, Query(description="page from the newest rows back (still in round order)")]


def build_router(store: SqlStore, verifier: Verifier) -> APIRouter:
    """The dashboard (page under ``/dashboard/``, API under ``/dashboard/api``) over ``store``."""

    def admin(request: Request) -> None:
        require_admin(request, verifier)

    # not in the aggregator's /openapi.json, which describes the agents' protocol (docs/protocol.md);
    # docs/dashboard.md lists these routes
    api = APIRouter(prefix="/dashboard/api", dependencies=[Depends(admin)], include_in_schema=False)
    _add_run_routes(api, store)
    _add_detail_routes(api, store)
    _add_model_routes(api, store)
    _add_cross_run_routes(api, store)
    router = APIRouter()
    router.include_router(api)
    router.include_router(asset_router())
    return router


def _not_found(detail: str) -> RequestRefusedError:
    return RequestRefusedError(STATUS_OF["not_found"], "not_found", detail)


def _run(store: SqlStore, run_id: str) -> RunRecord:
    """The run with this id (or unique prefix); anything else is 404 naming what to do."""
    try:
        return store.get_run(run_id)
    except StoreError as exc:
        raise _not_found(str(exc)) from None


def _privacy(store: SqlStore, record: RunRecord) -> dict[str, Any] | None:
    """A DP run's current ε, δ and mode (the newest stored ``privacy/*`` values); None otherwise."""
    series = {name: store.metric_series(record.id, name) for name in SHOWN}
    if not series[EPSILON]:
        return None
    latest = {name: values[-1][1] for name, values in series.items() if values}
    return privacy_summary(record.config, series[EPSILON][-1][0], latest)


def _add_run_routes(api: APIRouter, store: SqlStore) -> None:
    @api.get("/runs")
    def runs(limit: Annotated[int, Query(ge=1, le=MAX_RUNS)] = 50) -> dict[str, Any]:
        """The most recent runs, newest first, with progress and best accuracy."""
        records = store.list_runs(limit=limit)
        progress = store.run_progress(records)
        return {"runs": [views.run_summary(r, *progress[r.id]) for r in records], "limit": limit}

    @api.get("/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        """One run: its configuration, status and summary."""
        record = _run(store, run_id)
        document = views.run_detail(record, *store.run_progress([record])[record.id])
        document["privacy"] = _privacy(store, record)
        document["sample_privacy"] = sample_level_summary(
            store.metric_series(record.id, DP_SGD_EPSILON), store.metric_series(record.id, DP_SGD_DELTA)
        )
        return document

    @api.get("/runs/{run_id}/series")
    def series(run_id: str) -> dict[str, Any]:
        """Per round (the most recent :data:`MAX_SERIES_ROUNDS`): server metrics, counts and seconds."""
        record = _run(store, run_id)
        shown, rounds = store.recent_rounds(record.id, MAX_SERIES_ROUNDS, with_selected=False)
        metrics, total = store.metrics_page(record.id, "server", MAX_SERIES_METRICS)
        document = views.series(shown, metrics)
        document["truncated"] = len(shown) < rounds or total > len(metrics)
        return document

    @api.get("/runs/{run_id}/participation")
    def participation(
        run_id: str,
        clients: Annotated[int, Query(ge=1, le=MAX_MATRIX_CLIENTS)] = MAX_MATRIX_CLIENTS,
        rounds: Annotated[int, Query(ge=1, le=MAX_MATRIX_ROUNDS)] = MAX_MATRIX_ROUNDS,
    ) -> dict[str, Any]:
        """The client x round matrix, at most ``clients`` clients by the ``rounds`` most recent rounds."""
        record = _run(store, run_id)
        shown, total_rounds = store.recent_rounds(record.id, rounds, with_selected=True)
        ids, total = store.client_ids_page(record.id, clients)
        span = (shown[0].round, shown[-1].round) if shown else (0, -1)
        document = views.participation(
            shown, ids, total, store.contributions(record.id, ids, span), store.refusals(record.id, ids, span)
        )
        document["names"] = _agent_names(store, record)
        document["total_rounds"] = total_rounds
        document["truncated"] = document["truncated"] or len(shown) < total_rounds
        return document


def _agent_names(store: SqlStore, run: RunRecord) -> dict[str, str]:
    """Agent id -> name for a deployment (its clients are agent ids); empty for a simulation."""
    return {} if run.kind != "deployment" else {a.id: a.name for a in store.list_agents(run.id)}


def _add_detail_routes(api: APIRouter, store: SqlStore) -> None:
    @api.get("/runs/{run_id}/clients")
    def clients(run_id: str, limit: Limit = 1000, offset: Offset = 0, newest: Newest = False) -> dict[str, Any]:
        """A page of per-client metrics per round (scope ``client``)."""
        record = _run(store, run_id)
        rows, total = store.metrics_page(record.id, "client", limit, offset, newest)
        return {**views.metric_rows(rows, total, limit, offset), "names": _agent_names(store, record)}

    @api.get("/runs/{run_id}/system")
    def system(run_id: str, limit: Limit = 1000, offset: Offset = 0, newest: Newest = False) -> dict[str, Any]:
        """A page of system metrics (scope ``system``; empty where none were collected)."""
        record = _run(store, run_id)
        if "system" not in METRIC_SCOPES:  # a store that does not collect system metrics yet
            return views.metric_rows([], 0, limit, offset)
        rows, total = store.metrics_page(record.id, "system", limit, offset, newest)
        return views.metric_rows(rows, total, limit, offset)

    @api.get("/runs/{run_id}/rejections")
    def rejections(run_id: str, limit: Limit = 500, offset: Offset = 0) -> dict[str, Any]:
        """A page of the run's rejections, newest first, each with its code and reason."""
        record = _run(store, run_id)
        rows, total = store.rejections_page(record.id, limit, offset)
        for row in rows:
            row["created_at"] = views.when(row["created_at"])
        page = {"rows": rows, "total": total, "limit": limit, "offset": offset}
        return {**page, "truncated": offset + len(rows) < total, "names": _agent_names(store, record)}


def _add_model_routes(api: APIRouter, store: SqlStore) -> None:

    @api.get("/runs/{run_id}/models")
    def models(run_id: str) -> dict[str, Any]:
        """The lineage of global models: round, content hash, samples, time, and whether bytes were kept."""
        record = _run(store, run_id)
        rows = [
            {
                "round": m.round,
                "sha256": m.sha256,
                "num_samples": m.num_samples,
                "created_at": views.when(m.created_at),
                "downloadable": m.blob_key is not None,
            }
            for m in store.list_global_models(record.id)
        ]
        return {"models": rows}

    @api.get("/runs/{run_id}/models/{round}/download", response_class=Response)
    def download(run_id: str, round: Annotated[int, Path(ge=0, le=2**31 - 1)]) -> Response:
        """The stored safetensors bytes of one global model, as kept in the blob store."""
        record = _run(store, run_id)
        try:
            payload, sha256 = store.global_model_blob(record.id, round)
        except StoreError as exc:
            raise _not_found(str(exc)) from None
        filename = f"{_SAFE_FILENAME.sub('_', record.name)[:80]}-{record.short_id}-round{round}.safetensors"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"', "X-Fedloom-Sha256": sha256}
        return Response(payload, media_type="application/octet-stream", headers=headers)


def _add_cross_run_routes(api: APIRouter, store: SqlStore) -> None:
    @api.get("/agents")
    def agents(run: Annotated[str, Query(max_length=32)]) -> dict[str, Any]:
        """The run's agents: name, role, last seen, rounds contributed to, refusals recorded."""
        record = _run(store, run)
        activity = store.agent_activity(record.id)
        rows = [
            {
                "id": a.id,
                "name": a.name,
                "role": a.role,
                "created_at": views.when(a.created_at),
                "last_seen_at": views.when(a.last_seen_at),
                "rounds_joined": activity.get(a.id, (0, 0))[0],
                "refusals": activity.get(a.id, (0, 0))[1],
            }
            for a in store.list_agents(record.id)
        ]
        return {"run_id": record.id, "agents": rows}

    @api.get("/compare")
    def compare(
        ids: Annotated[str, Query(max_length=40 * MAX_COMPARE)],
        metric: Annotated[str, Query(min_length=1, max_length=200)] = "accuracy",
    ) -> dict[str, Any]:
        """One server metric's per-round series for several runs (comma-separated ids, at most 8)."""
        wanted = [i.strip() for i in ids.split(",") if i.strip()]
        if not wanted or len(wanted) > MAX_COMPARE:
            raise RequestRefusedError(
                422, "invalid_request", f"ids: give 1 to {MAX_COMPARE} comma-separated run ids, got {len(wanted)}"
            )
        runs = [_run(store, i) for i in wanted]
        lines = [
            {
                "id": r.id,
                "name": r.name,
                "points": [[n, views.number(v)] for n, v in store.metric_series(r.id, metric)[-MAX_SERIES_ROUNDS:]],
            }
            for r in runs
        ]
        return {"metric": metric, "runs": lines}
