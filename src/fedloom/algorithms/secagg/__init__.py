"""Secure aggregation for the weighted-mean family (SecAgg+, Bell et al. 2020; SecAgg,
Bonawitz et al. 2017, when the graph is complete).

Pure protocol code, in memory, reused by simulation and (later) the deployed aggregator
and agents: :class:`~.client.SecAggClient` and :class:`~.server.SecAggServerRound` are
the two state machines, the messages between them plain dataclasses with a validated
JSON form (:mod:`.messages`), :func:`~.local_round.run_local_round` one whole round in
memory. Only the settings and the compatibility check are imported here, so a run that
does not use secure aggregation never needs the ``secagg`` extra; importing the protocol
modules without ``cryptography`` raises a ConfigError naming ``pip install 'fedloom[secagg]'``.
"""

from __future__ import annotations

from fedloom.algorithms.secagg.compat import check_secure_compatible
from fedloom.algorithms.secagg.settings import SecAggSettings

__all__ = ["SecAggSettings", "check_secure_compatible"]
