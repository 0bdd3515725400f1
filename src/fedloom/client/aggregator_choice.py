"""Which aggregator of a federation an agent works with, and moving to another when it is gone.

A federation of several aggregators gives every agent the same list of aggregator URLs
(``fedloom agent --server URL1 --server URL2 ...``). :func:`rendezvous_order` ranks them
for one agent by highest random weight (rendezvous hashing): the score of a URL is the
SHA-256 of the agent's name and the URL, so the ranking needs no coordination, does not
depend on the order the URLs were given in, and an aggregator that is removed moves only
the agents that ranked it first (each to its own next choice), not everyone.

:class:`AggregatorFailover` runs one :class:`~fedloom.client.agent.Agent` session at a
time against the agent's current aggregator, each in its own state directory
(``STATE_DIR/aggregators/<key>``: credential, round and pending upload belong to one
aggregator's run). When a session ends with
:class:`~fedloom.client.answers.AggregatorUnavailableError` (every retry of a request
failed: the aggregator is gone), the agent moves to the next URL of its ranking and
registers there with the same join token (tokens are shared: the aggregators share one
database). Whatever it had trained or uploaded for the old aggregator stays that
aggregator's; it trains again from the new aggregator's model. The current choice is
kept in ``STATE_DIR/aggregator.json``, so a restarted agent goes back to where it was,
and an agent does not move back when its first choice returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal, Protocol

from fedloom.client.answers import AggregatorUnavailableError
from fedloom.core.errors import ConfigError

__all__ = ["AgentSession", "AggregatorFailover", "Runnable", "rendezvous_order", "server_key"]

log = logging.getLogger("fedloom.agent")

#: the file of the state directory that names the aggregator the agent is with
CHOICE_FILE = "aggregator.json"


def _score(agent_name: str, url: str) -> int:
    digest = hashlib.sha256(agent_name.encode() + b"\0" + url.encode()).digest()
    return int.from_bytes(digest[:16], "big")


def rendezvous_order(agent_name: str, servers: Sequence[str]) -> list[str]:
    """``servers`` ranked for ``agent_name``, first choice first (ties, if any, broken by URL).

    URLs are compared as given after removing a trailing ``/``: every agent must be given
    the same spelling of each aggregator's URL for all of them to agree."""
    urls = [url.rstrip("/") for url in servers]
    if not urls:
        raise ConfigError("give at least one aggregator URL (--server URL)")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"an aggregator URL is given twice: {urls} (give each aggregator once)")
    return sorted(urls, key=lambda url: (-_score(agent_name, url), url))


def server_key(url: str) -> str:
    """A short, file-name-safe key of an aggregator URL (its state directory's name)."""
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


class Runnable(Protocol):
    """What a session yields: an agent that runs until its aggregator's run is finished or it is stopped."""

    def run(self) -> Literal["finished", "stopped"]: ...


#: builds the session of one aggregator: (url, state directory) -> a context manager yielding the agent
AgentSession = Callable[[str, Path], AbstractContextManager[Runnable]]


class AggregatorFailover:
    """Runs an agent against its ranked aggregators in turn (see the module docstring).

    ``max_moves`` bounds how many times it moves after a failure (None: forever, going round
    the ranking again, which is what a site wants through a long outage); when it is used
    up the last :class:`AggregatorUnavailableError` is raised.
    """

    def __init__(
        self, agent_name: str, servers: Sequence[str], state_dir: str | Path, session: AgentSession,
        *, max_moves: int | None = None,
    ) -> None:  # fmt: skip
        self.order = rendezvous_order(agent_name, servers)
        self.state_dir = Path(state_dir)
        self.session = session
        self.max_moves = max_moves
        self.moves = 0

    @property
    def current(self) -> str:
        """The aggregator the agent is with: the stored choice if it is still listed, else the first choice."""
        try:
            stored = json.loads((self.state_dir / CHOICE_FILE).read_text())["server"]
        except (OSError, ValueError, KeyError, TypeError):
            return self.order[0]
        return stored if stored in self.order else self.order[0]

    def run(self) -> Literal["finished", "stopped"]:
        """Work until one aggregator's run is finished or the agent is stopped."""
        url = self.current
        while True:
            self._remember(url)
            try:
                with self.session(url, self.state_dir / "aggregators" / server_key(url)) as agent:
                    return agent.run()
            except AggregatorUnavailableError as exc:
                if self.max_moves is not None and self.moves >= self.max_moves:
                    raise
                self.moves += 1
                following = self.order[(self.order.index(url) + 1) % len(self.order)]
                log.warning("aggregator %s is unreachable (%s); moving to %s", url, exc.detail, following)
                url = following

    def _remember(self, url: str) -> None:
        """Persist the choice atomically (a crash leaves the old choice or the new one)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_dir / (CHOICE_FILE + ".tmp")
        temporary.write_text(json.dumps({"server": url, "order": self.order}))
        os.replace(temporary, self.state_dir / CHOICE_FILE)
