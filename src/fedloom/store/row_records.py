"""Rows to records: the frozen snapshots the store's readers hand out instead of ORM objects.

Kept in one place so every part of the store converts a row the same way, and so a
caller never holds an object bound to a database session.
"""

from __future__ import annotations

from fedloom.core.records import (
    AgentRecord,
    ClientRecord,
    MetricRecord,
    ModelRecord,
    RejectionRecord,
    RoundRecord,
    RunRecord,
    TokenRecord,
)
from fedloom.store.schema import (
    AgentRow,
    ClientRow,
    GlobalModelRow,
    LocalModelRow,
    MetricRow,
    RejectionRow,
    RoundRow,
    RunRow,
    TokenRow,
)


def run_record(row: RunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        name=row.name,
        kind=row.kind,
        status=row.status,
        seed=row.seed,
        config=row.config,
        created_at=row.created_at,
        finished_at=row.finished_at,
        summary=row.summary,
    )


def client_record(row: ClientRow) -> ClientRecord:
    return ClientRecord(
        run_id=row.run_id,
        client_id=row.client_id,
        num_samples=row.num_samples,
        created_at=row.created_at,
        extra=row.extra,
    )


def round_record(row: RoundRow) -> RoundRecord:
    return RoundRecord(
        run_id=row.run_id,
        round=row.round,
        status=row.status,
        selected=tuple(row.selected),
        opened_at=row.opened_at,
        closed_at=row.closed_at,
        num_updates=row.num_updates,
        num_samples=row.num_samples,
    )


def global_record(row: GlobalModelRow) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        run_id=row.run_id,
        round=row.round,
        num_samples=row.num_samples,
        sha256=row.sha256,
        blob_key=row.blob_key,
        created_at=row.created_at,
    )


def local_record(row: LocalModelRow) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        run_id=row.run_id,
        round=row.round,
        num_samples=row.num_samples,
        sha256=row.sha256,
        blob_key=row.blob_key,
        created_at=row.created_at,
        client_id=row.client_id,
        metrics=dict(row.metrics),
    )


def metric_record(row: MetricRow) -> MetricRecord:
    return MetricRecord(
        run_id=row.run_id,
        round=row.round,
        scope=row.scope,
        name=row.name,
        value=row.value,
        created_at=row.created_at,
        client_id=row.client_id,
    )


def token_record(row: TokenRow) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        max_agents=row.max_agents,
    )


def agent_record(row: AgentRow) -> AgentRecord:
    return AgentRecord(
        id=row.id,
        run_id=row.run_id,
        name=row.name,
        role=row.role,
        token_id=row.token_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
    )


def rejection_record(row: RejectionRow) -> RejectionRecord:
    return RejectionRecord(
        id=row.id,
        run_id=row.run_id,
        round=row.round,
        client_id=row.client_id,
        code=row.code,
        reason=row.reason,
        created_at=row.created_at,
    )
