"""User-level differential privacy for federated rounds: central DP-FedAvg (fixed or adaptive
clipping), client-side clipping with distributed noise, and local DP.

``PrivacySettings`` is the one settings type (``simulate(privacy=...)``, ``fedloom sim --dp``
and the aggregator's ``[privacy]`` table); :func:`with_privacy` turns a plain strategy into
its private version, refusing configurations that could not give the privacy they claim.
Every ε comes from :mod:`fedloom.algorithms.privacy_accountant`. See docs/privacy.md.
"""

from fedloom.algorithms.dp.settings import PRIVACY_MODES, PrivacySettings
from fedloom.algorithms.dp.strategy import with_privacy

__all__ = ["PRIVACY_MODES", "PrivacySettings", "with_privacy"]
