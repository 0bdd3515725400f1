"""Join tokens for agent credentials, with the refusals that keep identities honest.

A name belongs to the token that first registered it (another token gets ``name_taken``),
a token admits a bounded number of names (``agent_limit``), and a declared data size
must be within ``[rounds] max_num_samples``. Every refusal of a known token is recorded
with the requested name; an unknown token is refused without a row, since anyone on
the network could otherwise fill the table.
"""

from __future__ import annotations

import logging

from fedloom.core.errors import RegistrationRefusedError
from fedloom.core.records import AgentRecord
from fedloom.core.store_protocols import DeploymentStore
from fedloom.server.answers import RequestRefusedError, refusal

log = logging.getLogger("fedloom.aggregator")


class Registrar:
    """Registers and authenticates the agents of one run (no round state: the aggregator admits them)."""

    def __init__(self, store: DeploymentStore, run_id: str, max_num_samples: int) -> None:
        self.store, self.run_id, self.max_num_samples = store, run_id, max_num_samples

    def register(self, name: str, join_token: str, num_samples: int | None) -> tuple[AgentRecord, str, int | None]:
        """The agent, its fresh credential and its declared size, or a recorded refusal.

        ``num_samples`` (optional, fixed at the first registration in a run) caps what the
        agent's uploads may claim."""
        token = self.store.verify_join_token(join_token)
        if token is None:
            raise refusal("unauthorized", "the join token is unknown or revoked (ask the aggregator's admin)")
        limit = self.max_num_samples
        if num_samples is not None and not 1 <= num_samples <= limit:
            detail = f"agent {name!r} declares {num_samples} samples; [rounds] max_num_samples allows 1 to {limit}"
            raise self.refuse(name, "bad_num_samples", detail)
        try:
            agent, credential = self.store.register_agent(self.run_id, name, token)
        except RegistrationRefusedError as exc:
            raise self.refuse(name, exc.code, str(exc)) from None
        self.store.register_client(self.run_id, agent.id, num_samples)
        return agent, credential, self.declared_size(agent.id)

    def declared_size(self, agent_id: str) -> int | None:
        """The data size ``agent_id`` declared at its first registration (None: not declared)."""
        declared = {c.client_id: c.num_samples for c in self.store.list_clients(self.run_id)}
        return declared.get(agent_id)

    def refuse(self, name: str, code: str, detail: str) -> RequestRefusedError:
        """Record a refused registration (client id: the agent name asked for) and return the error."""
        self.store.record_rejection(self.run_id, None, name, code, detail)
        log.info("refused to register agent %s: %s (%s)", name, code, detail)
        return refusal(code, detail)

    def authenticate(self, credential: str) -> AgentRecord | None:
        """The agent of this run holding ``credential``, or None (unknown, replaced, revoked, other run)."""
        agent = self.store.authenticate(credential)
        return agent if agent is not None and agent.run_id == self.run_id else None
