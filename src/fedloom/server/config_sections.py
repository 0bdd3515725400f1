"""The tables of ``aggregator.toml`` as frozen dataclasses, each checking its own fields.

A section is valid once constructed: every bad value raises a ConfigError naming the
field (``[rounds] threshold``), what was wrong and where to set it (file, variable or
flag, see ``_where_to_set``). How the file, the environment and the flags are read
and layered lives in :mod:`fedloom.server.config`, which also re-exports these names.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedloom.algorithms.compression_settings import CHOICES as COMPRESSION_CHOICES
from fedloom.algorithms.compression_settings import compression_spec
from fedloom.algorithms.dp_sgd_settings import DPSGDSettings
from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.algorithms.dp.settings import PrivacySettings
    from fedloom.core.compression import CompressionSpec

__all__ = [
    "DEADLINE_POLICIES",
    "DEFAULT_MAX_NUM_SAMPLES",
    "ENV_PREFIX",
    "MODES",
    "AsyncSection",
    "ClientSection",
    "PrivacySection",
    "RoundsSection",
    "RunSection",
    "ServerSection",
    "StrategySection",
    "field_error",
]

ENV_PREFIX = "FEDLOOM_SERVER_"
MODES = ("sync", "async")
DEADLINE_POLICIES = ("aggregate", "extend", "abandon")
_RUN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: ``[rounds] max_num_samples`` by default: far above any one site's dataset, far below 2**62
DEFAULT_MAX_NUM_SAMPLES = 1_000_000_000
_INT64_MAX = 2**63 - 1


def _where_to_set(section: str, name: str) -> str:
    """Where a field can be set, for the end of an error message."""
    flag = "--" + name.replace("_", "-")
    return f"(set {name} in the [{section}] table of aggregator.toml, {ENV_PREFIX}{name.upper()} or {flag})"


def field_error(section: str, name: str, problem: str) -> ConfigError:
    """The error for one bad field: which one, what is wrong with it, and where to set it."""
    return ConfigError(f"[{section}] {name} {problem} {_where_to_set(section, name)}")


def _at_least(section: str, name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise field_error(section, name, f"must be >= {minimum:g}, got {value!r}")


def _positive(section: str, name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise field_error(section, name, f"must be a positive number, got {value!r}")


def _fraction(section: str, name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise field_error(section, name, f"must be in (0, 1], got {value!r}")


def _choice(section: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise field_error(section, name, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")


@dataclass(frozen=True)
class ServerSection:
    """``[server]``: where to listen and where to keep the record."""

    host: str = "127.0.0.1"
    #: 0 picks a free port; the CLI prints it and writes it to ``HOME/aggregator.port``
    port: int = 8080
    tls_cert: str | None = None
    tls_key: str | None = None
    max_upload_mb: float = 64.0
    #: seconds an upload body may take to arrive once it holds an upload slot; a slower one is refused (408)
    upload_timeout_seconds: float = 120.0
    #: refusals (and registrations) answered per second per agent, or per address before authentication;
    #: beyond the burst, requests of that agent or address are answered 429 rate_limited
    rate_limit_per_second: float = 2.0
    rate_limit_burst: int = 60
    #: rejection rows one agent can add per round: the first N, then one summary row
    max_rejections_per_round: int = 20
    #: SQLAlchemy URL; None means SQLite at ``HOME/fedloom.db``
    db_url: str | None = None
    #: store directory (blobs, default database, port file); None means $FEDLOOM_HOME or ./fedloom-runs
    home: str | None = None
    #: where model blobs go: ``s3://bucket/prefix`` (endpoint, region, profile from FEDLOOM_S3_*, credentials
    #: from AWS_* or a profile, never here) or a directory; None means ``HOME/blobs``
    blob_url: str | None = None
    #: once the run is finished, how long to keep serving so agents can fetch the final model
    #: (the server exits earlier when every agent has been told); ``fedloom server --keep-serving`` never exits
    linger_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise field_error("server", "host", "must not be empty, e.g. 127.0.0.1 or 0.0.0.0")
        if not 0 <= self.port <= 65535:
            raise field_error("server", "port", f"must be in 0-65535 (0 picks a free port), got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise field_error("server", missing, "is missing: HTTPS needs both tls_cert and tls_key")
        _positive("server", "max_upload_mb", self.max_upload_mb)
        _positive("server", "upload_timeout_seconds", self.upload_timeout_seconds)
        _positive("server", "rate_limit_per_second", self.rate_limit_per_second)
        _at_least("server", "rate_limit_burst", self.rate_limit_burst, 1)
        _at_least("server", "max_rejections_per_round", self.max_rejections_per_round, 0)
        if not (math.isfinite(self.linger_seconds) and self.linger_seconds >= 0):
            raise field_error("server", "linger_seconds", f"must be a number >= 0, got {self.linger_seconds!r}")

    @property
    def tls(self) -> bool:
        """True when the server speaks HTTPS."""
        return self.tls_cert is not None

    @property
    def max_upload_bytes(self) -> int:
        """The largest request body accepted, in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass(frozen=True)
class RunSection:
    """``[run]``: which run this aggregator drives (a restart with the same name resumes it)."""

    name: str = "default"
    seed: int = 0
    #: a fedloom safetensors payload (``fedloom.core.to_bytes``) or a raw safetensors file
    initial_model: str | None = None
    mode: str = "sync"

    def __post_init__(self) -> None:
        if not _RUN_NAME.fullmatch(self.name):
            raise field_error(
                "run", "name", f"must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', got {self.name!r}"
            )
        _choice("run", "mode", self.mode, MODES)


@dataclass(frozen=True)
class RoundsSection:
    """``[rounds]``: selection, when a round closes, and how many there are (see docs/protocol.md)."""

    max_rounds: int = 10
    fraction: float = 1.0
    min_agents: int = 1
    threshold: float = 1.0
    min_updates: int = 1
    deadline_seconds: float = 300.0
    deadline_policy: str = "aggregate"
    check_interval_seconds: float = 1.0
    #: the most samples one update (or an agent's declared data size) may claim: FedAvg
    #: weighs by the claim, so an unbounded one lets a single agent become the model
    max_num_samples: int = DEFAULT_MAX_NUM_SAMPLES

    def __post_init__(self) -> None:
        _at_least("rounds", "max_rounds", self.max_rounds, 1)
        _fraction("rounds", "fraction", self.fraction)
        _at_least("rounds", "min_agents", self.min_agents, 1)
        _fraction("rounds", "threshold", self.threshold)
        _at_least("rounds", "min_updates", self.min_updates, 1)
        _positive("rounds", "deadline_seconds", self.deadline_seconds)
        _choice("rounds", "deadline_policy", self.deadline_policy, DEADLINE_POLICIES)
        _positive("rounds", "check_interval_seconds", self.check_interval_seconds)
        if not 1 <= self.max_num_samples <= _INT64_MAX:
            raise field_error("rounds", "max_num_samples", f"must be in 1-{_INT64_MAX}, got {self.max_num_samples!r}")


@dataclass(frozen=True)
class ClientSection:
    """``[client]``: the local training settings every agent receives in its task; with
    ``dp_sgd_noise`` set, every agent trains with sample-level DP-SGD (docs/privacy.md); with
    ``compression`` set, every agent sends its update compressed (docs/deployment.md)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    dp_sgd_noise: float | None = None
    dp_sgd_clip: float = 1.0
    dp_sgd_delta: float = 1e-5
    compression: str = "none"
    compression_topk: float = 0.01

    def __post_init__(self) -> None:
        _at_least("client", "epochs", self.epochs, 1)
        _choice("client", "compression", self.compression, COMPRESSION_CHOICES)
        if not 0 < self.compression_topk <= 1:
            raise field_error("client", "compression_topk", f"must be in (0, 1], got {self.compression_topk!r}")
        _at_least("client", "batch_size", self.batch_size, 1)
        _positive("client", "lr", self.lr)
        try:
            self.dp_sgd()
        except ConfigError as exc:
            raise ConfigError(f"[client] {exc} {_where_to_set('client', 'dp_sgd_noise')}") from None

    def compression_spec(self) -> CompressionSpec | None:
        """The compression every agent encodes its update under, or None (plain models)."""
        return compression_spec(self.compression, self.compression_topk)

    def dp_sgd(self) -> DPSGDSettings | None:
        """The DP-SGD settings sent to every agent, or None (``dp_sgd_noise`` unset: no DP-SGD)."""
        if self.dp_sgd_noise is None:
            return None
        return DPSGDSettings(self.dp_sgd_noise, self.dp_sgd_clip, self.dp_sgd_delta)


@dataclass(frozen=True)
class AsyncSection:
    """``[async]``: FedBuff's buffer and polynomial staleness weighting, or FedAsync mixing
    (``mode = "async"`` only)."""

    buffer_size: int = 2
    staleness_exponent: float = 0.5
    #: 0 = FedBuff (each version is the buffer's mean); in (0, 1] = FedAsync mixing
    mixing: float = 0.0

    def __post_init__(self) -> None:
        _at_least("async", "buffer_size", self.buffer_size, 1)
        if not 0.0 <= self.mixing <= 1.0:
            raise field_error("async", "mixing", f"must be in [0, 1] (0 = FedBuff), got {self.mixing!r}")
        if not (self.staleness_exponent >= 0 and math.isfinite(self.staleness_exponent)):
            raise field_error("async", "staleness_exponent", f"must be >= 0, got {self.staleness_exponent!r}")


@dataclass(frozen=True)
class StrategySection:
    """``[strategy]``: the algorithm, by name, with its parameters (docs/algorithms.md).

    Unset parameters keep the algorithm's defaults; a parameter the chosen strategy does
    not use is an error. Server optimisers keep state between rounds; it is stored with
    every global model, so a restarted aggregator resumes it (docs/deployment.md).
    """

    strategy: str = "fedavg"
    aggregator: str | None = None
    server_opt: str | None = None
    server_lr: float | None = None
    server_momentum: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    tau: float | None = None
    proximal_mu: float | None = None
    trim_beta: float | None = None
    max_iter: int | None = None
    byzantine_f: int | None = None
    multikrum_m: int | None = None
    clip_norm: float | None = None
    clip_iterations: int | None = None
    q: float | None = None
    filter_max_distance: float | None = None
    filter_min_cosine: float | None = None
    personal_keys: str | None = None
    curvature_lambda: float | None = None
    feddyn_alpha: float | None = None

    def __post_init__(self) -> None:
        from fedloom.algorithms.registry import build_strategy

        try:
            build_strategy(self.strategy, aggregator=self.aggregator, server_opt=self.server_opt, params=self.params())
        except ConfigError as exc:
            raise ConfigError(f"[strategy] {exc} {_where_to_set('strategy', 'strategy')}") from None

    def params(self) -> dict[str, Any]:
        """The parameters that are set."""
        names = ("strategy", "aggregator", "server_opt")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in names and v is not None}


#: the tools ``[tracking] sinks`` may name (the sinks themselves live in ``fedloom.tracking``)
TRACKING_SINKS = ("tensorboard", "mlflow", "wandb")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass(frozen=True)
class TrackingSection:
    """``[tracking]``: the tools fed after every recorded round (docs/tracking.md); empty paths
    mean a folder under the fedloom home, next to the store."""

    sinks: tuple[str, ...] = ()
    tensorboard_dir: str = ""
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "fedloom"
    wandb_project: str = "fedloom"
    wandb_mode: str = "offline"

    def __post_init__(self) -> None:
        for sink in self.sinks:
            _choice("tracking", "sinks", sink, TRACKING_SINKS)
        if len(set(self.sinks)) != len(self.sinks):
            raise field_error("tracking", "sinks", f"names a sink twice: {list(self.sinks)}")
        _choice("tracking", "wandb_mode", self.wandb_mode, WANDB_MODES)


@dataclass(frozen=True)
class EvaluationSection:
    """``[evaluation]``: the aggregator's own test of each global model (central evaluation, as
    ``Evaluation(central=...)`` in simulation). ``evaluator`` names a trainer factory like an
    agent's ``--trainer`` (``path.py:make_trainer`` or ``module:attr``) whose ``evaluate`` is
    called on every round's model; ``evaluator_args`` are its ``key=value`` arguments."""

    evaluator: str = ""
    evaluator_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.evaluator and ":" not in self.evaluator:
            spec = repr(self.evaluator)
            raise field_error("evaluation", "evaluator", f"{spec} is not 'path.py:factory' or 'module:attr'")
        for item in self.evaluator_args:
            if "=" not in item:
                raise field_error("evaluation", "evaluator_args", f"{item!r} is not key=value")
        if self.evaluator_args and not self.evaluator:
            raise field_error("evaluation", "evaluator_args", "given without an evaluator (set [evaluation] evaluator)")


@dataclass(frozen=True)
class PrivacySection:
    """``[privacy]``: user-level differential privacy (docs/privacy.md). The fields are
    :class:`~fedloom.algorithms.dp.PrivacySettings`' with a ``dp_`` prefix (config names are
    flat and unique: ``[run] mode`` and ``[strategy] clip_norm`` exist); ``dp_mode`` unset means
    no DP. Setting ``dp_target_quantile`` turns on adaptive clipping."""

    dp_mode: str | None = None
    dp_noise_multiplier: float | None = None
    dp_clip_norm: float | None = None
    dp_delta: float | None = None
    dp_target_quantile: float | None = None
    dp_clip_lr: float | None = None
    dp_clip_count_stddev: float | None = None
    dp_target_epsilon: float | None = None
    dp_accountant: str | None = None
    dp_noise_seed: int | None = None

    def __post_init__(self) -> None:
        try:
            self.settings()
        except ConfigError as exc:
            raise ConfigError(f"[privacy] {exc} (set the dp_* keys of [privacy] in aggregator.toml)") from None

    def settings(self) -> PrivacySettings | None:
        """The PrivacySettings of this table, or None when nothing is set."""
        from fedloom.algorithms.dp.settings import privacy_from_mapping

        given = {k.removeprefix("dp_"): v for k, v in dataclasses.asdict(self).items() if v is not None}
        if not given:
            return None
        if "mode" not in given:
            raise ConfigError(f"dp_mode is missing but {sorted('dp_' + k for k in given)} are set: set dp_mode")
        if "target_quantile" in given:
            given["adaptive_clip"] = True
        return privacy_from_mapping(given)
