"""``[federation]`` of aggregator.toml: this aggregator as one cluster of a federation of several.

Several aggregators share one database and one blob store; each drives its own run
(named ``<[run] name>.<cluster>``, so they never resume each other's) and, at every round
close, mixes the other clusters' newest recorded models into its own
(:mod:`fedloom.server.semi_global_rounds`, docs/deployment.md "Several aggregators").
``[run] name`` is the federation's name, the same on every aggregator of it.

Unset ``cluster`` (the default) is a plain, single aggregator. Every value is checked at
start and each error names the field and how to set it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fedloom.core.errors import ConfigError

_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _problem(name: str, problem: str) -> ConfigError:
    flag = "--" + name.replace("_", "-")
    return ConfigError(
        f"[federation] {name} {problem} (set {name} in the [federation] table of aggregator.toml,"
        f" FEDLOOM_SERVER_{name.upper()} or {flag})"
    )


@dataclass(frozen=True)
class FederationSection:
    """``[federation]``: ``cluster`` is this aggregator's cluster id, ``clusters`` every cluster of the
    federation (this one included; models of a cluster not listed are never read), and
    ``max_staleness_rounds`` how far behind a peer's newest model may be and still count."""

    cluster: str | None = None
    clusters: tuple[str, ...] = ()
    max_staleness_rounds: int = 2

    def __post_init__(self) -> None:
        if self.max_staleness_rounds < 0:
            raise _problem("max_staleness_rounds", f"must be >= 0, got {self.max_staleness_rounds}")
        if self.cluster is None:
            if self.clusters:
                raise _problem("cluster", "is missing: name this aggregator's cluster, one of the listed clusters")
            return
        for name in (self.cluster, *self.clusters):
            if not _CLUSTER_NAME.fullmatch(name):
                raise _problem("clusters", f"has {name!r}: a cluster id is 1-32 characters of A-Z a-z 0-9 _ -")
        if len(set(self.clusters)) != len(self.clusters):
            raise _problem("clusters", f"lists a cluster twice: {list(self.clusters)}")
        if self.cluster not in self.clusters:
            raise _problem("cluster", f"is {self.cluster!r}, which is not in clusters = {list(self.clusters)}")

    @property
    def enabled(self) -> bool:
        return self.cluster is not None

    def run_name(self, federation: str) -> str:
        """The name of this aggregator's own run: the federation's name and the cluster id."""
        return federation if self.cluster is None else f"{federation}.{self.cluster}"
