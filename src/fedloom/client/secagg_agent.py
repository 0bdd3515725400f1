"""An agent's side of a secure-aggregation round (docs/protocol.md, "Secure aggregation").

When the task says ``secagg``, the agent answers the stage it names with
:class:`~fedloom.algorithms.secagg.client.SecAggClient`, held in memory for the round:
``advertise`` (download and check the global model, send two public keys), ``share``
(seal shares for the neighbours whose keys the server relays), ``collect`` (train with
the site's Trainer as for a plain round, then send ``n · q(local - global)`` masked
instead of the model, with the sample count and metrics in the clear as a plain upload
has them), ``unmask`` (the shares the server asks for). The update never leaves the
site unmasked.

The round's secrets exist only in this process: an agent restarted mid-round cannot
answer the later stages and is a dropout for that round (the server rebuilds around it,
or refuses the round below the threshold); it joins again at the next round. A stage the
client refuses (too few neighbours left, a relay that does not open) ends its round too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.client.agent_fit import WithSiteState, fit_checked
from fedloom.client.answers import AggregatorError, AggregatorUnavailableError, AuthError, TaskInfo, fit_config_from
from fedloom.client.lineage_check import LineageChecker, check_download
from fedloom.client.trainer import Trainer
from fedloom.client.transport import AggregatorClient
from fedloom.core.errors import ConfigError, ValidationError
from fedloom.core.weights import Weights

log = logging.getLogger("fedloom.agent")

Call = Callable[..., Any]


def update_delta(local: Mapping[str, np.ndarray], global_weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``local - global`` per tensor in the tensor's own dtype (the ring layout's reference): computed in
    float64 for floating tensors and exactly in int64 for integer ones (BatchNorm's counters)."""
    delta = {}
    for name, start in global_weights.items():
        like = np.asarray(start)
        wide = np.int64 if like.dtype.kind in "iub" else np.float64
        delta[name] = np.asarray(np.asarray(local[name]).astype(wide) - like.astype(wide), like.dtype)
    return delta


class SecAggParticipant:
    """The secure rounds of one agent (see the module docstring); ``call`` wraps each HTTP call
    the way the agent does (re-registering once on 401)."""

    def __init__(self, client: AggregatorClient, directory: Path, lineage: LineageChecker | None) -> None:
        self.client, self.directory, self.lineage = client, directory, lineage
        self._round: int | None = None
        self._protocol: Any = None  # the round's SecAggClient
        self._global: Weights | None = None
        self._stochastic = False
        self._uniform = False
        self._answered: set[tuple[int, str]] = set()
        self._given_up: int | None = None
        self._sent_sha256, self._sent_samples = "", 0

    def act(self, task: TaskInfo, trainer: Trainer, call: Call) -> None:
        """Answer the stage the task names, once; a refusal on either side ends this round for the agent."""
        info = task.secagg or {}
        stage, round = str(info.get("stage")), task.round
        if (round, stage) in self._answered or self._given_up == round:
            return
        from fedloom.algorithms.secagg.fields import SecAggMessageError

        try:
            if stage == "advertise":
                self._begin(task, info, call)
            elif self._round != round or self._protocol is None:
                raise SecAggMessageError("stage", f"joined at {stage!r} without the round's keys (a restart?)")
            body = self._answer(stage, task, trainer, call)
            call(self.client.json_call, "POST", f"/v1/secagg/{stage}", json=body, what=f"secagg {stage} message")
        except (AuthError, AggregatorUnavailableError):
            raise
        except (ValidationError, ConfigError, AggregatorError) as exc:
            log.warning("round %d: secure aggregation stage %s: %s; this agent sits the round out", round, stage, exc)
            self._given_up, self._protocol = round, None
            return
        self._answered.add((round, stage))
        if stage == "collect" and self.lineage is not None:
            self.lineage.contributed(round, self._sent_sha256, self._sent_samples)
        log.info("round %d: secure aggregation stage %s answered", round, stage)

    def _begin(self, task: TaskInfo, info: Mapping[str, Any], call: Call) -> None:
        """Download and check the round's global model, then make the round's SecAggClient."""
        from fedloom.algorithms.secagg import SecAggSettings
        from fedloom.algorithms.secagg.client import SecAggClient
        from fedloom.algorithms.secagg.codec import RingLayout

        source = task.global_round if task.global_round is not None else task.round
        weights, sha = call(self.client.download_global, source)
        check_download(self.lineage, lambda r: call(self.client.lineage, r), source, sha)
        if task.global_sha256 is not None and sha != task.global_sha256:
            raise ValidationError(f"the served global model {sha[:12]} is not the task's {task.global_sha256[:12]}")
        try:
            settings = SecAggSettings(**dict(info["settings"]))
            selected, seed = [str(c) for c in info["selected"]], int(info["graph_seed"])
            uniform = info.get("uniform_weight", False)
            if not isinstance(uniform, bool):
                raise TypeError("uniform_weight must be true or false")
        except (TypeError, KeyError, ValueError) as exc:
            raise ValidationError(f"the task's secagg settings are unusable: {exc}") from None
        agent_id = self.client.agent_id or ""
        layout = RingLayout(weights, settings)
        self._protocol = SecAggClient(agent_id, task.round, selected, settings, seed, layout)
        self._round, self._global, self._stochastic = task.round, weights, settings.stochastic_rounding
        self._uniform = uniform

    def _relay(self, stage: str, round: int, call: Call) -> Any:
        from fedloom.algorithms.secagg.fields import SecAggMessageError

        data = call(self.client.json_call, "GET", "/v1/secagg/relay", what=f"secagg {stage} relay")
        if data.get("stage") != stage or data.get("round") != round:
            raise SecAggMessageError("stage", f"the relay is for {data.get('stage')!r} of round {data.get('round')!r}")
        return data.get("relay")

    def _answer(self, stage: str, task: TaskInfo, trainer: Trainer, call: Call) -> dict[str, Any]:
        from fedloom.algorithms.secagg import messages as m
        from fedloom.algorithms.secagg.fields import SecAggMessageError

        protocol = self._protocol
        if stage == "advertise":
            return dict(protocol.advertise_keys().to_json())
        if stage == "share":
            return dict(protocol.share_keys(m.KeysRelay.from_json(self._relay(stage, task.round, call))).to_json())
        if stage == "collect":
            return self._masked(task, trainer, m.SharesRelay.from_json(self._relay(stage, task.round, call)))
        if stage == "unmask":
            return dict(protocol.unmask(m.UnmaskRequest.from_json(self._relay(stage, task.round, call))).to_json())
        raise SecAggMessageError("stage", f"unknown stage {stage!r}")

    def _masked(self, task: TaskInfo, trainer: Trainer, relay: Any) -> dict[str, Any]:
        """Train as for a plain round, then mask ``local - global`` (the relay's shares open first)."""
        assert self._global is not None
        config = fit_config_from(task.config, task.round)
        weights, num_samples, metrics = fit_checked(WithSiteState(trainer, self.directory), self._global, config)
        rng = np.random.default_rng() if self._stochastic else None
        weight = 1 if self._uniform else num_samples  # client-side DP: every client weighs the same
        masked = self._protocol.masked_input(update_delta(weights, self._global), weight, relay, rng)
        # the hash the server records for this input (SecAggServerRound.masked_sha256), which the lineage lists
        sent = np.ascontiguousarray(masked.words, "<u8").tobytes()
        self._sent_sha256, self._sent_samples = hashlib.sha256(sent).hexdigest(), num_samples
        log.info("round %d: trained on %d samples; sending the masked input", task.round, num_samples)
        return {"masked_input": masked.to_json(), "num_samples": num_samples, "metrics": dict(metrics)}
