"""The aggregator's in-memory state, and what it answers from it.

Everything here is rebuilt from the store at start and after a failed store write (the
database is the commit point): the newest global model, the round lifecycle, the
agents with their declared data sizes, and the agents whose token was revoked. The
answers to agents — their task, whether an upload could be accepted now, the run's
status — are read from this state alone, under the aggregator's lock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fedloom.core.records import AgentRecord
from fedloom.server.answers import AgentTask
from fedloom.server.rounds import AsyncLifecycle, SyncRounds
from fedloom.server.served_model import ServedModel, iso


@dataclass
class RunState:
    """What the aggregator holds in memory for one run (see the module docstring)."""

    min_agents: int
    latest: ServedModel | None = None
    latest_payload: bytes | None = None
    rounds: SyncRounds | AsyncLifecycle | None = None
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    #: data sizes declared at registration (``num_samples``), None when not declared
    declared: dict[str, int | None] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)

    def set_latest(self, model: ServedModel) -> None:
        self.latest, self.latest_payload = model, None

    # -- the run -------------------------------------------------------------------
    def current_round(self) -> int:
        return self.rounds.current_round if self.rounds is not None else 1

    def rounds_completed(self) -> int:
        return self.rounds.rounds_completed if self.rounds is not None else 0

    def finished(self) -> bool:
        return self.rounds is not None and self.rounds.finished

    def open_for_agents(self) -> bool:
        return len(self.agents) >= self.min_agents

    def state_name(self) -> str:
        rounds = self.rounds
        if self.latest is None or rounds is None:
            return "waiting_for_model"
        if rounds.finished:
            return "finished"
        if isinstance(rounds, AsyncLifecycle):
            return "collecting" if self.open_for_agents() else "waiting_for_agents"
        return "collecting" if rounds.open_task is not None else "waiting_for_agents"

    def selected(self) -> list[str]:
        rounds = self.rounds
        if isinstance(rounds, AsyncLifecycle):
            return sorted(self.agents) if self.state_name() == "collecting" else []
        task = rounds.open_task if rounds is not None else None
        return list(task.selected) if task is not None else []

    def status(self, run_id: str, mode: str, max_rounds: int) -> dict[str, Any]:
        """``GET /v1/status``: after the finish, ``round`` names the last round."""
        return {
            "run_id": run_id,
            "round": self.rounds_completed() if self.finished() else self.current_round(),
            "state": self.state_name(),
            "mode": mode,
            "agents": len(self.agents),
            "selected": self.selected(),
            "received": self.rounds.received_count() if self.rounds is not None else 0,
            "rounds_completed": self.rounds_completed(),
            "max_rounds": max_rounds,
            "secagg_stage": getattr(self.rounds, "stage", None),  # SecAggRounds only
        }

    # -- agents --------------------------------------------------------------------
    def task_for(self, agent_id: str) -> AgentTask:
        """What ``agent_id`` should do now (the protocol's ``TaskInfo``)."""
        latest, rounds = self.latest, self.rounds
        if latest is None or rounds is None:
            return AgentTask("wait", 1)
        current = rounds.current_round
        if rounds.finished:
            return AgentTask("finished", rounds.rounds_completed, current, latest.sha256)
        task = rounds.task_for(agent_id)
        if task.state == "train" and not self.open_for_agents():
            return AgentTask("wait", current, current, latest.sha256)
        deadline = None if task.deadline is None else iso(task.deadline)
        fit = None if task.fit is None else asdict(task.fit)
        stage = rounds.stage_info(agent_id) if isinstance(rounds, SyncRounds) and task.state == "train" else None
        if stage is not None:  # a secure-aggregation round: the agent owes this stage an answer
            return AgentTask("secagg", task.round, current, latest.sha256, fit, deadline, stage)
        return AgentTask(task.state, task.round, current, latest.sha256, fit, deadline)

    def upload_problem(self, agent_id: str) -> tuple[str, str] | None:
        """Why an upload from ``agent_id`` could not be accepted now (code, reason), or None."""
        rounds = self.rounds
        if self.latest is None or rounds is None:
            return "round_closed", "no round is open: the run has no model yet"
        if rounds.finished:
            return "round_closed", "the run is finished"
        if isinstance(rounds, AsyncLifecycle):
            return None if self.open_for_agents() else ("round_closed", "no round is open: waiting for agents")
        task = rounds.open_task
        if task is None:
            return "round_closed", f"round {rounds.current_round} is not open"
        if agent_id not in task.selected:
            return "not_selected", f"agent {agent_id!r} is not selected in round {task.round}"
        if agent_id in rounds.engine.received_from():
            return "duplicate", f"agent {agent_id!r} already has an update accepted in round {task.round}"
        return None

    def claim_problem(self, agent_id: str, num_samples: int, limit: int) -> str | None:
        """Why a claim of ``num_samples`` is refused (more than declared, or than the maximum), or None:
        FedAvg weighs by the claim, so an agent claiming 2**62 samples would be the global model."""
        declared = self.declared.get(agent_id)
        if declared is not None and num_samples > declared:
            return f"the update claims {num_samples} samples but agent {agent_id} declared {declared}"
        if num_samples > limit:
            return f"the update claims {num_samples} samples; [rounds] max_num_samples is {limit}"
        return None

    def admit(self, agent: AgentRecord) -> bool:
        """Add (or refresh) a registered agent; True if it is new to the run."""
        new = agent.id not in self.agents
        self.agents[agent.id] = agent
        self.revoked.discard(agent.id)
        if new and isinstance(self.rounds, SyncRounds):
            self.rounds.add_client(agent.id)
        return new

    def drop_revoked(self, revoked: frozenset[str]) -> list[str]:
        """Take agents whose token was revoked out of the run; returns the newly revoked ones."""
        newly = sorted(revoked - self.revoked)
        for agent_id in newly:
            self.agents.pop(agent_id, None)
            if isinstance(self.rounds, SyncRounds):
                self.rounds.remove_client(agent_id)
        self.revoked = set(revoked)
        return newly
