"""Deployment access: join tokens, the agents registered with them, and their credentials.

``AccessMixin`` is the :class:`fedloom.core.store_protocols.AccessStore` part of
:class:`fedloom.store.SqlStore`. Secrets (join tokens, agent credentials) are random
256-bit strings handed out once; the store keeps only their SHA-256 (a fast hash
suffices: they are not guessable passwords) and compares digests with
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, or_, select, update

from fedloom.core.errors import StoreError
from fedloom.core.records import ROLES, AgentRecord, TokenRecord
from fedloom.store.checks import INT32_MAX, check_choice, check_int
from fedloom.store.connection import SqlCore, rowcount
from fedloom.store.registration import revoked_agent_ids, usage_by_token, write_agent
from fedloom.store.row_records import agent_record, token_record
from fedloom.store.schema import DEFAULT_MAX_AGENTS, AgentRow, TokenRow
from fedloom.store.types import utcnow

#: prefix of a join token (``fedloom token create``) and of an agent credential
JOIN_TOKEN_PREFIX = "flj_"  # noqa: S105 (a public prefix, not a secret)
CREDENTIAL_PREFIX = "fla_"
#: token and agent names: what is safe in a URL, a file name and a log line
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: strings longer than this cannot be one of our secrets; refused before hashing
_MAX_SECRET_LENGTH = 128


class AccessMixin(SqlCore):
    """Join tokens (only hashes kept), agents per run, and the authentication of their credentials."""

    #: seconds between two writes of an agent's ``last_seen_at``: :meth:`authenticate`
    #: runs on every request, and a write per request would serialise them on SQLite
    last_seen_interval: float = 10.0

    def create_token(self, name: str, role: str = "agent", max_agents: int = DEFAULT_MAX_AGENTS) -> str:
        """Issue a join token and return its text (``flj_…``), which is never stored and never shown again.

        At most one token of a name is active at a time; a revoked token's name can be reused.
        ``max_agents`` bounds the distinct agent names that may register with it.
        """
        _check_slug("token name", name)
        check_choice("role", role, ROLES)
        limit = check_int("max_agents", max_agents, minimum=1, maximum=INT32_MAX)
        token = JOIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = TokenRow(name=name, sha256=_digest(token), role=role, created_at=utcnow(), max_agents=limit)
        conflict = f"a token named {name!r} is already active: revoke it first (`fedloom token revoke --name {name}`)"
        # the partial unique index on active names refuses a twin, concurrent or not; no read
        # first, so SQLite takes its write lock at once (waits, instead of a stale-snapshot error)
        with self._session(f"create token {name!r}", conflict=conflict) as session:
            session.add(row)
        return token

    def revoke_token(self, name: str) -> None:
        """Revoke the active token of this name; agents that registered with it can no longer authenticate."""
        active = (TokenRow.name == name, TokenRow.revoked_at.is_(None))
        with self._session(f"revoke token {name!r}") as session:
            if rowcount(session, update(TokenRow).where(*active).values(revoked_at=utcnow())) == 0:
                known = session.scalar(select(func.count()).select_from(TokenRow).where(TokenRow.name == name))
                if known:
                    raise StoreError(f"token {name!r} is already revoked")
                raise StoreError(f"no token named {name!r} (see `fedloom token list`)")

    def list_tokens(self) -> list[TokenRecord]:
        """Every token ever issued, revoked ones included, oldest first (no secrets, no hashes),
        each with how many distinct agent names it has registered."""
        with self._session("list tokens") as session:
            used = usage_by_token(session)
            rows = session.scalars(select(TokenRow).order_by(TokenRow.id))
            return [dataclasses.replace(token_record(r), used=used.get(r.id, 0)) for r in rows]

    def verify_join_token(self, token: str) -> TokenRecord | None:
        """The active token with this text, or None (unknown, revoked, or not a token at all)."""
        digest = _secret_digest(token, JOIN_TOKEN_PREFIX)
        if digest is None:
            return None
        with self._session("verify a join token") as session:
            row = session.scalars(select(TokenRow).where(TokenRow.sha256 == digest)).first()
            if row is None or row.revoked_at is not None or not hmac.compare_digest(row.sha256, digest):
                return None
            return token_record(row)

    # ----------------------------------------------------------------- agents

    def register_agent(self, run_id: str, name: str, token: TokenRecord) -> tuple[AgentRecord, str]:
        """Register agent ``name`` in the run and return it with a fresh credential (``fla_…``).

        Registering the same name again with a token of the same name keeps the agent id
        and its role and replaces the credential (the old one stops working). The rules of
        :mod:`fedloom.store.registration` refuse (``RegistrationRefusedError``, nothing
        written) a name bound to another token, a token over its agent limit, a revoked token.
        """
        _check_slug("agent name", name)
        credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(credential)
        action = f"register agent {name!r} in run {run_id}"
        for attempt in (1, 2):
            try:
                with self._session(action, run_id=run_id) as session:
                    row = write_agent(session, run_id, name, token, digest, utcnow())
                    return agent_record(row), credential
            except StoreError as exc:
                # two first registrations of one name raced: the loser's insert hit the unique
                # constraint; its second attempt updates the winner's row instead
                raced = isinstance(exc.__cause__, sa_exc.IntegrityError) and self._agent_id(run_id, name) is not None
                if attempt == 2 or not raced:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def revoked_agent_ids(self, run_id: str) -> set[str]:
        """The run's agents whose token is revoked (``fedloom token revoke``, maybe from another process)."""
        with self._session(f"list revoked agents of run {run_id}") as session:
            return revoked_agent_ids(session, run_id)

    def _agent_id(self, run_id: str, name: str) -> str | None:
        with self._session("look up an agent") as session:
            return session.scalar(select(AgentRow.id).where(AgentRow.run_id == run_id, AgentRow.name == name))

    def authenticate(self, credential: str) -> AgentRecord | None:
        """The agent holding this credential, or None if it is unknown, replaced, or its token revoked.

        Refreshes ``last_seen_at`` at most once per :attr:`last_seen_interval` seconds per agent.
        """
        digest = _secret_digest(credential, CREDENTIAL_PREFIX)
        if digest is None:
            return None
        stmt = (
            select(AgentRow, TokenRow.revoked_at)
            .join(TokenRow, AgentRow.token_id == TokenRow.id)
            .where(AgentRow.credential_sha256 == digest)
        )
        with self._session("authenticate an agent") as session:
            found = session.execute(stmt).first()
            if found is None:
                return None
            row, revoked_at = found
            if revoked_at is not None or not hmac.compare_digest(row.credential_sha256, digest):
                return None
            record = agent_record(row)
        now = utcnow()
        seen = record.last_seen_at
        if seen is not None and (now - seen).total_seconds() < self.last_seen_interval:
            return record
        cutoff = now - timedelta(seconds=self.last_seen_interval)  # concurrent requests write once
        stale = or_(AgentRow.last_seen_at.is_(None), AgentRow.last_seen_at <= cutoff)
        with self._session(f"record that agent {record.id} was seen") as session:
            session.execute(update(AgentRow).where(AgentRow.id == record.id, stale).values(last_seen_at=now))
        return dataclasses.replace(record, last_seen_at=now)

    def list_agents(self, run_id: str) -> list[AgentRecord]:
        """The run's agents in registration order (empty for an unknown run)."""
        stmt = select(AgentRow).where(AgentRow.run_id == run_id).order_by(AgentRow.created_at, AgentRow.name)
        with self._session(f"list agents of run {run_id}") as session:
            return [agent_record(r) for r in session.scalars(stmt)]

    def get_agent(self, agent_id: str) -> AgentRecord:
        """The agent with this id; an unknown id is a ``StoreError``."""
        with self._session(f"look up agent {agent_id}") as session:
            row = session.get(AgentRow, agent_id)
            if row is None:
                raise StoreError(f"no agent with id {agent_id!r}")
            return agent_record(row)


def _check_slug(field: str, value: str) -> str:
    """Token and agent names: 1-64 characters of letters, digits, ``.``, ``_`` and ``-``."""
    if not isinstance(value, str) or not _NAME_PATTERN.fullmatch(value):
        raise StoreError(f"{field} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', got {value!r}")
    return value


def _digest(secret: str) -> str:
    """What the store keeps of a secret: its SHA-256, as lowercase hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _secret_digest(secret: object, prefix: str) -> str | None:
    """The digest of a presented secret, or None when it cannot be one of ours (no query needed)."""
    if not isinstance(secret, str) or len(secret) > _MAX_SECRET_LENGTH:
        return None
    if not secret.startswith(prefix) or not secret.isascii():
        return None
    return _digest(secret)
