"""Who may register an agent name: the rules that bind a site's name to its join token.

An agent name is an identity: uploads count as that agent's, and its role decides who
may upload the initial model. So a name, once registered in a run, belongs to the join
token *name* that registered it (a token re-issued under the same name after a
revocation takes it back; any other token is refused with ``name_taken``), and the
agent's role is fixed at its first registration. A token admits at most
``max_agents`` distinct agent names over all runs (``agent_limit`` beyond), so one
leaked or greedy token cannot fill a round's selection with Sybil agents.

Each function runs inside the caller's transaction; a refusal raises
:class:`~fedloom.core.errors.RegistrationRefusedError` before anything is written.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from fedloom.core.errors import RegistrationRefusedError
from fedloom.core.records import TokenRecord
from fedloom.store.schema import AgentRow, TokenRow

#: prefix of an agent id
AGENT_ID_PREFIX = "ag_"


def write_agent(session: Session, run_id: str, name: str, token: TokenRecord, digest: str, now: datetime) -> AgentRow:
    """Re-key the agent ``name`` bound to this token's name, or insert it if the name is new.

    The UPDATE comes first so SQLite takes its write lock before any read (a concurrent
    registration waits instead of reading a stale snapshot). For a new name, the token row
    is locked (FOR NO KEY UPDATE: agent rows referencing it still insert) before the limit is
    counted, so two new names cannot both take the last slot.
    """
    same_token_name = select(TokenRow.id).where(TokenRow.name == token.name).scalar_subquery()
    where = (AgentRow.run_id == run_id, AgentRow.name == name)
    values = {"token_id": token.id, "credential_sha256": digest, "last_seen_at": now}
    rebind = update(AgentRow).where(*where, AgentRow.token_id.in_(same_token_name)).values(**values)
    rebound = cast("CursorResult[Any]", session.execute(rebind)).rowcount
    token_query = select(TokenRow).where(TokenRow.id == token.id)
    if not rebound:  # a new name: lock the token, then try again (a twin may have just inserted the name)
        token_query = token_query.with_for_update(key_share=True)
    token_row = session.scalars(token_query).first()
    if not rebound:
        rebound = cast("CursorResult[Any]", session.execute(rebind)).rowcount
    if token_row is None or token_row.revoked_at is not None:
        raise RegistrationRefusedError(
            "unauthorized", f"cannot register agent {name!r}: the join token {token.name!r} has been revoked"
        )
    if not rebound:
        _check_name_free(session, run_id, name)
        _check_limit(session, name, token_row)
        agent_id = AGENT_ID_PREFIX + uuid.uuid4().hex
        session.add(AgentRow(id=agent_id, run_id=run_id, name=name, created_at=now, role=token.role, **values))
        session.flush()
    return session.scalars(select(AgentRow).where(*where)).one()


def _check_name_free(session: Session, run_id: str, name: str) -> None:
    """Refuse a name registered in this run with a token of another name."""
    stmt = (
        select(TokenRow.name)
        .join(AgentRow, AgentRow.token_id == TokenRow.id)
        .where(AgentRow.run_id == run_id, AgentRow.name == name)
    )
    owner = session.scalar(stmt)
    if owner is not None:
        raise RegistrationRefusedError(
            "name_taken",
            f"agent name {name!r} is already registered with another join token ({owner!r}): "
            "choose another --name, or register with that site's own token",
        )


def _check_limit(session: Session, name: str, token: TokenRow) -> None:
    """Refuse a new agent name once the token has registered ``max_agents`` distinct names."""
    names = used_names(session, token.id)
    if name not in names and len(names) >= token.max_agents:
        raise RegistrationRefusedError(
            "agent_limit",
            f"join token {token.name!r} admits at most {token.max_agents} agent name(s) and already has "
            f"{', '.join(sorted(names))}: register with one of those names, or revoke the token and issue "
            f"one with a higher limit (`fedloom token create --name {token.name} --max-agents N`)",
        )


def used_names(session: Session, token_id: int) -> set[str]:
    """The distinct agent names registered with a token, over every run."""
    return set(session.scalars(select(AgentRow.name).where(AgentRow.token_id == token_id).distinct()))


def usage_by_token(session: Session) -> dict[int, int]:
    """How many distinct agent names each token has registered (tokens with none are absent)."""
    stmt = select(AgentRow.token_id, func.count(AgentRow.name.distinct())).group_by(AgentRow.token_id)
    return {int(token_id): int(count) for token_id, count in session.execute(stmt)}


def revoked_agent_ids(session: Session, run_id: str) -> set[str]:
    """The run's agents whose current token is revoked: out of the run until they re-register."""
    stmt = (
        select(AgentRow.id)
        .join(TokenRow, AgentRow.token_id == TokenRow.id)
        .where(AgentRow.run_id == run_id, TokenRow.revoked_at.is_not(None))
    )
    return set(session.scalars(stmt))
