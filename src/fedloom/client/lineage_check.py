"""An agent's check of the global models it receives against the run's lineage chain.

The aggregator serves, beside each global model, its lineage link and the fields the link
hashes (``GET /v1/lineage/{round}``, :class:`~fedloom.core.lineage.LineageEntry`). Before
training on a model the agent checks that

1. the entry names the model it downloaded (same content hash);
2. the link is what the entry's fields hash to (the aggregator's arithmetic is not trusted);
3. the chain extends the last link this agent verified: the entries between are fetched
   and each one's ``previous`` must be the link before it, so history this agent has
   seen cannot be rewritten or forked without it noticing;
4. in synchronous runs, its own accepted local model (agent id, content hash, sample
   count) is among the inputs of the round it contributed to.

The last verified link is kept in the agent's state directory (``lineage.json``), so the
check survives restarts. It proves consistency with what the agent saw, not that the
aggregator computed the mean correctly (that would need every input; see docs/privacy.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedloom.client.agent_state import atomic_write
from fedloom.client.answers import NotFoundError
from fedloom.core.errors import IntegrityError
from fedloom.core.lineage import LineageEntry

log = logging.getLogger("fedloom.agent")

#: the most entries walked to join a new model to the last verified link in one check
MAX_WALK = 10_000


class LineageError(IntegrityError):
    """A global model the aggregator served does not match the run's lineage chain."""


@dataclass(frozen=True)
class Contribution:
    """This agent's accepted local model, which the next global model must list as an input."""

    round: int
    sha256: str
    num_samples: int


@dataclass(frozen=True)
class _Head:
    run_id: str
    round: int
    link: str


class LineageChecker:
    """Remembers the last verified link of the run and checks each new global model against it."""

    def __init__(self, directory: str | Path, agent_id: Callable[[], str | None]) -> None:
        self.path = Path(directory) / "lineage.json"
        self._agent_id = agent_id
        self._head, self._contribution = self._load()

    def _load(self) -> tuple[_Head | None, Contribution | None]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            head = data.get("head")
            given = data.get("contribution")
            return (
                _Head(str(head["run_id"]), int(head["round"]), str(head["link"])) if head else None,
                Contribution(int(given["round"]), str(given["sha256"]), int(given["num_samples"])) if given else None,
            )
        except FileNotFoundError:
            return None, None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("lineage: %s is damaged (%s); starting the chain afresh", self.path, exc)
            return None, None

    def _save(self) -> None:
        head = self._head
        data = {
            "head": None if head is None else {"run_id": head.run_id, "round": head.round, "link": head.link},
            "contribution": None if self._contribution is None else self._contribution.__dict__,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data).encode("utf-8"))

    @property
    def has_head(self) -> bool:
        """True once a link of the run has been verified (and kept)."""
        return self._head is not None

    def contributed(self, round: int, sha256: str, num_samples: int) -> None:
        """Record an accepted upload: the model that round makes must list it."""
        self._contribution = Contribution(round, sha256, num_samples)
        self._save()

    def verify(self, entry: LineageEntry, model_sha256: str, fetch: Callable[[int], LineageEntry]) -> None:
        """Check ``entry`` (of the model just downloaded, hashing to ``model_sha256``); ``fetch(r)``
        returns the entry of the model that starts round ``r``, used to walk from the last link."""
        if entry.model_sha256 != model_sha256:
            raise LineageError(
                f"global model {entry.round}: the lineage entry names model {entry.model_sha256[:12]} "
                f"but the downloaded model hashes to {model_sha256[:12]}"
            )
        _check_link(entry)
        head = self._head
        if head is not None and head.run_id == entry.run_id:
            self._join(head, entry, fetch)
        self._check_contribution(entry)
        self._head = _Head(entry.run_id, entry.round, entry.link)
        self._save()

    def walk_starts(self, entry: LineageEntry) -> range:
        """The rounds whose starting models lie between the last verified link and ``entry``
        (the model that starts round r is global model r-1); empty when nothing is to walk."""
        head = self._head
        if head is None or head.run_id != entry.run_id or not 0 < entry.round - head.round <= MAX_WALK:
            return range(0)
        return range(head.round + 2, entry.round + 1)

    def _join(self, head: _Head, entry: LineageEntry, fetch: Callable[[int], LineageEntry]) -> None:
        if entry.round < head.round or (entry.round == head.round and entry.link != head.link):
            raise LineageError(
                f"global model {entry.round}: the chain was rewritten: this agent verified link "
                f"{head.link[:12]} at global model {head.round} before"
            )
        last = _Head(head.run_id, head.round, head.link)
        if entry.round - head.round > MAX_WALK:
            raise LineageError(f"global model {entry.round}: more than {MAX_WALK} models since the last verified one")
        for start in self.walk_starts(entry):
            between = fetch(start)
            if between.round <= last.round:
                continue  # an abandoned round wrote no model: the same one starts the next round
            _check_link(between)
            _check_previous(between, last)
            self._check_contribution(between)
            last = _Head(between.run_id, between.round, between.link)
        if entry.round > last.round:
            _check_previous(entry, last)

    def _check_contribution(self, entry: LineageEntry) -> None:
        given, agent = self._contribution, self._agent_id()
        if given is None or agent is None or entry.round < given.round:
            return
        if entry.round == given.round and (agent, given.sha256, given.num_samples) not in entry.inputs:
            raise LineageError(
                f"global model {entry.round}: this agent's accepted local model {given.sha256[:12]} "
                f"({given.num_samples} samples) is not among the inputs it lists"
            )
        self._contribution = None


def _check_link(entry: LineageEntry) -> None:
    if entry.recomputed_link() != entry.link:
        raise LineageError(
            f"global model {entry.round}: its fields hash to {entry.recomputed_link()[:12]}, "
            f"not to the link {entry.link[:12]} the aggregator serves"
        )


def _check_previous(entry: LineageEntry, last: _Head) -> None:
    if entry.previous != last.link:
        raise LineageError(
            f"global model {entry.round}: its previous link {(entry.previous or '')[:12]} is not the "
            f"link {last.link[:12]} of global model {last.round} this agent verified"
        )


class PendingCheck:
    """A lineage check fetched before its model: the entry and the ones between it and the
    last verified link. The aggregator exits once every agent fetched the final model, so
    the final check's requests must all be made before that download (:func:`fetch_check`)."""

    def __init__(self, checker: LineageChecker, entry: LineageEntry | None, between: dict[int, LineageEntry]) -> None:
        self._checker, self._entry, self._between = checker, entry, between

    def verify(self, model_sha256: str) -> None:
        """Check the model that was downloaded (hashing to ``model_sha256``) against the fetched chain."""
        if self._entry is None:
            return
        self._checker.verify(self._entry, model_sha256, self._between.__getitem__)
        log.info("global model %d: lineage verified (link %s)", self._entry.round, self._entry.link[:12])


#: fetches the lineage entry of the model that starts a round, or of ``"latest"``
EntryFetcher = Callable[[int | str], LineageEntry]


def fetch_check(checker: LineageChecker, lineage: EntryFetcher, source: int | str) -> PendingCheck:
    """Fetch what checking the model of ``source`` needs. An aggregator that serves no lineage
    (older than the endpoint, or a run recorded before schema v6) is let through with a warning
    only until this agent has verified a link of the run."""
    try:
        entry = lineage(source)
    except NotFoundError as exc:
        if checker.has_head:
            raise LineageError(f"global model {source}: the aggregator no longer serves its lineage ({exc})") from exc
        log.warning("the aggregator serves no lineage for global model %s (%s): not verified", source, exc)
        return PendingCheck(checker, None, {})
    return PendingCheck(checker, entry, {start: lineage(start) for start in checker.walk_starts(entry)})


def check_download(checker: LineageChecker | None, lineage: EntryFetcher, source: int | str, sha256: str) -> None:
    """Fetch and verify the entry of the model just downloaded for ``source`` (see :func:`fetch_check`)."""
    if checker is not None:
        fetch_check(checker, lineage, source).verify(sha256)


__all__ = [
    "MAX_WALK",
    "Contribution",
    "EntryFetcher",
    "LineageChecker",
    "LineageError",
    "PendingCheck",
    "check_download",
    "fetch_check",
]
