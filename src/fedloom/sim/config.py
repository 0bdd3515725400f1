"""The configuration of a built-in simulation, from TOML and/or CLI flags, validated up front.

Every field has a default, every check names the field and the fix, and unknown keys
in a config file are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.algorithms.compression_settings import compression_spec, with_compression
from fedloom.algorithms.dp import PrivacySettings, with_privacy
from fedloom.algorithms.dp.settings import privacy_from_mapping
from fedloom.algorithms.dp_sgd_settings import DPSGDSettings, with_dp_sgd
from fedloom.algorithms.registry import build_strategy
from fedloom.algorithms.secagg import SecAggSettings, check_secure_compatible
from fedloom.algorithms.strategy import RoundCriteria, Strategy
from fedloom.client.class_weights import parse_class_weight
from fedloom.core.errors import ConfigError
from fedloom.server.rounds import DEADLINE_POLICIES, AsyncSettings
from fedloom.sim.adversary import Adversary
from fedloom.sim.clock import DISTRIBUTIONS, ClientSpeeds
from fedloom.sim.cohort.setting import parse_cohort
from fedloom.sim.config_data import check_data_choice, data_label, data_shorthand
from fedloom.sim.partition import PARTITION_SCHEMES
from fedloom.sim.partition_size import SIZE_SKEW_KINDS
from fedloom.sim.ray_resources import ClientResources

MODELS = ("logreg", "mlp-numpy", "logreg-torch", "mlp", "cnn", "cifar_cnn")
#: the models trained in NumPy (no PyTorch needed): NumpyLogisticTrainer and NumpyMLPTrainer
NUMPY_MODELS = ("logreg", "mlp-numpy")
PARTITIONS = PARTITION_SCHEMES
EXECUTORS = ("sequential", "parallel", "ray")
#: ``sync`` rounds, or the asynchronous lifecycle (FedBuff, FedAsync)
MODES = ("sync", "fedbuff", "fedasync")


@dataclass(frozen=True)
class SimConfig:
    """Everything ``fedloom sim`` needs; the same fields are the keys of a ``--config`` TOML file."""

    #: a built-in dataset by name (None: digits, unless ``data`` names a local one); never both
    dataset: str | None = None
    data_dir: str | None = None
    #: a local dataset: the fields of fedloom.data.spec.DataSpec (kind, path, target, ...; docs/data.md);
    #: ``fedloom sim --data table:F.csv --target COL`` or a ``[sim.data]`` table; the group column is partition_by
    data: dict[str, Any] = field(default_factory=dict)
    model: str = "logreg"
    clients: int = 10
    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    #: --partition natural: the data column whose distinct values are the clients (a site or user id)
    partition_by: str | None = None
    #: --partition inner_dirichlet: one size per client, adding up to the training set (empty: equal sizes)
    client_sizes: list[int] = field(default_factory=list)
    #: --partition size_skew: the size law (linear, square, exponential) and the exponential's rate
    size_skew: str = "linear"
    size_skew_rate: float = 1.0
    #: --partition feature_skew: how many k-means clusters of the features are dealt among clients
    feature_clusters: int = 10
    fraction: float = 1.0
    min_clients: int = 1
    rounds: int = 10
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0
    device: str = "cpu"
    #: the training loss's class weights (fedloom.client.class_weights): "none", "balanced" (each client
    #: from its own labels) or one weight per class, "1,19"
    class_weight: str = "none"
    #: the hidden layer widths of mlp / mlp-numpy, "64,32" ("": the model's default, 200,200), and the
    #: torch mlp's dropout after each hidden layer (0: none)
    hidden: str = ""
    model_dropout: float = 0.0
    executor: str = "sequential"
    workers: int = 0
    max_retries: int = 0
    #: --executor ray: a cluster to join (None: start a local Ray), what each client reserves
    #: there (memory as bytes or "2GB"), the local Ray's CPUs (0: one per core) and how often a
    #: client lost with its Ray node or worker is re-run
    ray_address: str | None = None
    ray_cpus_per_client: float = 1.0
    ray_gpus_per_client: float = 0.0
    ray_memory_per_client: str | None = None
    ray_cpus: int = 0
    ray_retries: int = 3
    #: cohort training (fedloom.sim.cohort): "auto" (sized to memory, where the model is safe), "off", or "N"
    cohort: str = "auto"
    client_eval_fraction: float = 0.0
    on_client_error: str = "fail"
    keep_local_models: bool = False
    name: str | None = None
    strategy: str = "fedavg"
    aggregator: str | None = None
    server_opt: str | None = None
    strategy_params: dict[str, Any] = field(default_factory=dict)
    attack: str = "none"
    attack_fraction: float = 0.2
    attack_scale: float = 0.0
    speeds: str = "none"
    speed_spread: float = 1.0
    dropout: float = 0.0
    deadline_seconds: float = 0.0
    threshold: float = 1.0
    on_deadline: str = "aggregate"
    mode: str = "sync"
    buffer_size: int = 10
    staleness_exponent: float = 0.5
    mixing: float = 0.6
    concurrency: int = 10
    local_test_fraction: float = 0.0
    finetune_epochs: int = 0
    #: the PrivacySettings fields (``fedloom sim --dp ...``, or a ``[privacy]`` table); empty: no DP
    privacy: dict[str, Any] = field(default_factory=dict)
    dp_sgd: bool = False
    dp_sgd_noise: float = 1.0
    dp_sgd_clip: float = 1.0
    dp_sgd_delta: float = 1e-5
    #: compressed updates (core/compression.py): "none", "float16", "int8" or "topk"
    compression: str = "none"
    compression_topk: float = 0.01
    secagg: bool = False
    secagg_bits: int = 24
    secagg_clip: float = 1.0
    #: a fraction of the neighbours in (0.5, 1], or a count when > 1
    secagg_threshold: float = 0.67
    #: graph degree k; 0 = every selected client (complete graph)
    secagg_neighbours: int = 0
    #: stage -> dropout probability, e.g. {"collect": 0.1}
    secagg_dropout: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.build_strategy()  # an unknown strategy or a misplaced parameter fails here, before any work
        self.secure()
        self.adversary()
        self.client_speeds()
        self.asynchronous()
        self.privacy_settings()
        _one_of("mode", self.mode, MODES)
        _one_of("on_deadline", self.on_deadline, DEADLINE_POLICIES)
        if not 0 <= self.local_test_fraction < 1 or self.finetune_epochs < 0:
            raise ConfigError(
                f"local_test_fraction must be in [0, 1) and finetune_epochs >= 0, got {self.local_test_fraction}"
                f" and {self.finetune_epochs} (set --local-test-fraction / --finetune-epochs)"
            )
        if self.deadline_seconds < 0:
            raise ConfigError(f"deadline_seconds must be >= 0 (0 = none), got {self.deadline_seconds}")
        check_data_choice(self.dataset, self.data, self.seed, self.partition_by)
        _one_of("model", self.model, MODELS)
        parse_class_weight(self.class_weight)
        self._check_model_options()
        _one_of("partition", self.partition, PARTITIONS)
        self._check_partition()
        _one_of("on_client_error", self.on_client_error, ("fail", "skip"))
        _one_of("executor", self.executor, EXECUTORS)
        self._check_ray()
        parse_cohort(self.cohort)
        _one_of("speeds", self.speeds, ("none", *DISTRIBUTIONS))
        if self.workers < 0 or self.max_retries < 0:
            raise ConfigError(f"workers and max_retries must be >= 0 (0 workers = one per core); got {self.workers}")
        for name in ("clients", "rounds", "epochs", "batch_size", "min_clients", "classes_per_client", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction} (e.g. --fraction 0.1)")
        if not 0 <= self.client_eval_fraction <= 1:
            raise ConfigError(f"client_eval_fraction must be in [0, 1], got {self.client_eval_fraction}")
        if self.lr <= 0 or self.alpha <= 0:
            raise ConfigError(f"lr and alpha must be > 0, got lr={self.lr}, alpha={self.alpha}")

    def dataset_name(self) -> str:
        """What the run trains on, for names and messages: ``digits``, or ``table:hospital.csv``."""
        return data_label(self.dataset, self.data)

    def _check_partition(self) -> None:
        """The settings of the newer partition schemes: each only with its scheme, each in range."""
        if self.partition == "natural" and not self.partition_by:
            raise ConfigError(
                "partition natural needs partition_by: the column naming each sample's client (--by site)"
            )
        for name, (scheme, default) in _SCHEME_FIELDS.items():
            if getattr(self, name) != default and self.partition != scheme:
                flag = "--by" if name == "partition_by" else "--" + name.replace("_", "-")
                raise ConfigError(
                    f"{name} ({flag}) only applies to partition {scheme}, got partition {self.partition!r}"
                )
        _one_of("size_skew", self.size_skew, SIZE_SKEW_KINDS)
        if not self.size_skew_rate > 0 or not math.isfinite(self.size_skew_rate) or self.feature_clusters < 1:
            raise ConfigError(
                f"size_skew_rate must be > 0 and feature_clusters >= 1, got {self.size_skew_rate} and "
                f"{self.feature_clusters} (set --size-skew-rate / --feature-clusters)"
            )
        sizes = self.client_sizes
        if sizes and (
            len(sizes) != self.clients or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes)
        ):
            raise ConfigError(
                f"client_sizes must list {self.clients} whole numbers >= 1 (one per client), got {sizes!r}"
            )

    def partition_options(
        self, *, features: np.ndarray | None = None, groups: np.ndarray | None = None
    ) -> dict[str, Any]:
        """The :func:`~fedloom.sim.partition.partition` keywords this scheme reads, with the data it needs.

        ``features`` (the training inputs) reach ``feature_skew`` and ``groups`` (the
        ``partition_by`` column) reach ``natural``; the other schemes get neither.
        """
        if self.partition == "natural":
            return {"groups": groups}
        if self.partition == "inner_dirichlet":
            return {"client_sizes": list(self.client_sizes)} if self.client_sizes else {}
        if self.partition == "size_skew":
            return {"size_skew": self.size_skew, "size_skew_rate": self.size_skew_rate}
        if self.partition == "feature_skew":
            return {"features": features, "feature_clusters": self.feature_clusters}
        return {}

    def hidden_sizes(self) -> tuple[int, ...] | None:
        """``hidden`` as layer widths (None: the model's default), refused unless positive integers."""
        if not self.hidden.strip():
            return None
        parts = [p.strip() for p in self.hidden.split(",")]
        if not all(p.isascii() and p.isdigit() and int(p) >= 1 for p in parts):
            raise ConfigError(
                f"hidden must be positive layer widths separated by commas, got {self.hidden!r} (e.g. --hidden 64,32)"
            )
        return tuple(int(p) for p in parts)

    def _check_model_options(self) -> None:
        """``hidden`` shapes the two MLPs, ``model_dropout`` the torch one only."""
        if self.hidden_sizes() is not None and self.model not in ("mlp", "mlp-numpy"):
            raise ConfigError(f"hidden sets the layers of mlp / mlp-numpy, not of {self.model!r}: drop --hidden")
        if self.model_dropout and self.model != "mlp":
            raise ConfigError(f"model_dropout is an option of the torch mlp, not of {self.model!r}: drop it")
        if not 0 <= self.model_dropout < 1:
            raise ConfigError(f"model_dropout must be a probability in [0, 1), got {self.model_dropout}")

    def _check_ray(self) -> None:
        """The ``ray_*`` settings: only with ``executor = "ray"``, each in range."""
        ray_fields = [f for f in dataclasses.fields(self) if f.name.startswith("ray_")]
        given = [f.name for f in ray_fields if getattr(self, f.name) != f.default]
        if given and self.executor != "ray":
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(f"{flags}: only the Ray executor reads these; add --executor ray, or drop them")
        if self.ray_cpus < 0 or self.ray_retries < 0:
            raise ConfigError(f"ray_cpus and ray_retries must be >= 0, got {self.ray_cpus} and {self.ray_retries}")
        if self.ray_address and self.ray_cpus:
            raise ConfigError("--ray-cpus sizes a local Ray; a cluster joined with --ray-address has its own CPUs")
        self.ray_resources()

    def ray_resources(self) -> ClientResources:
        """What each client reserves on a Ray node (``--ray-cpus/gpus/memory-per-client``)."""
        memory = self.ray_memory_per_client
        return ClientResources.from_flags(self.ray_cpus_per_client, self.ray_gpus_per_client, memory)

    def to_dict(self) -> dict[str, Any]:  # what a run records: the dataset that ran, digits when none was named
        return {**dataclasses.asdict(self), "dataset": None if self.data else self.dataset_name()}

    def adversary(self) -> Adversary:
        """The simulated attack these settings ask for (``none`` by default)."""
        return Adversary(self.attack, self.attack_fraction, self.attack_scale)

    def asynchronous(self) -> AsyncSettings | None:
        """The asynchronous lifecycle's settings (``mode`` fedbuff / fedasync), None for sync rounds."""
        if self.mode == "fedasync":
            return AsyncSettings.fedasync(self.mixing, self.staleness_exponent)
        if self.mode == "fedbuff":
            return AsyncSettings(self.buffer_size, self.staleness_exponent)
        return None

    def privacy_settings(self) -> PrivacySettings | None:
        """User-level DP (docs/privacy.md), refused here when it could not be private for this run."""
        if not self.privacy:
            return None
        settings = privacy_from_mapping(self.privacy)
        if self.mode != "sync":
            raise ConfigError(f"privacy needs synchronous rounds (mode sync), got mode {self.mode!r}")
        with_privacy(self.build_strategy(), settings, self.clients)
        return settings

    def secure(self) -> SecAggSettings | None:
        """Secure aggregation's settings (``--secagg``), None without it; checked against the strategy."""
        if not self.secagg:
            if self.secagg_dropout:
                raise ConfigError("secagg_dropout needs secure aggregation: add --secagg (secagg = true)")
            return None
        value = self.secagg_threshold
        if value > 1 and value != int(value):
            raise ConfigError(f"secagg_threshold above 1 is a count of neighbours and must be whole, got {value}")
        settings = SecAggSettings(
            clip_range=self.secagg_clip,
            bits=self.secagg_bits,
            threshold=int(value) if value > 1 else float(value),
            neighbours=self.secagg_neighbours or None,
        )
        check_secure_compatible(self.build_strategy())
        if self.mode != "sync" or self.deadline_seconds:
            raise ConfigError("--secagg runs synchronous rounds without a deadline: drop --mode / --deadline-seconds")
        return settings

    def client_speeds(self) -> ClientSpeeds | None:
        """Simulated client speeds and dropouts, or None when neither is asked for."""
        if self.speeds == "none" and self.dropout == 0:
            return None
        distribution = "constant" if self.speeds == "none" else self.speeds
        return ClientSpeeds(distribution, spread=self.speed_spread, dropout=self.dropout)

    def build_strategy(self) -> Strategy:
        """The composed strategy these settings name (see fedloom.algorithms.registry), every client
        training with DP-SGD when ``dp_sgd`` is set."""
        strategy = build_strategy(
            self.strategy,
            fraction=self.fraction,
            min_clients=self.min_clients,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr if self.lr > 0 else 1.0,
            aggregator=self.aggregator,
            server_opt=self.server_opt,
            params=self.strategy_params,
            criteria=RoundCriteria(threshold=self.threshold),
        )
        strategy = with_compression(strategy, compression_spec(self.compression, self.compression_topk))
        if not self.dp_sgd:
            return strategy
        return with_dp_sgd(strategy, DPSGDSettings(self.dp_sgd_noise, self.dp_sgd_clip, self.dp_sgd_delta))


#: the fields only one partition scheme reads: field -> (that scheme, the field's default)
_SCHEME_FIELDS: dict[str, tuple[str, Any]] = {
    "partition_by": ("natural", None),
    "client_sizes": ("inner_dirichlet", []),
    "size_skew": ("size_skew", "linear"),
    "size_skew_rate": ("size_skew", 1.0),
    "feature_clusters": ("feature_skew", 10),
}


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config field {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


_FIELD_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "bool": bool, "dict[str, Any]": dict, "list[int]": list}.get(str(f.type), str)
    for f in dataclasses.fields(SimConfig)
}


#: text fields a TOML file may also give as a list (``class_weight = [1, 19]``, ``hidden = [64, 32]``)
_LIST_FIELDS = ("class_weight", "hidden")


def _joined(value: Any) -> Any:
    """A TOML list as the flag's comma-separated text (checked by the field's own validation)."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else value


def config_from_mapping(values: Mapping[str, Any], base: SimConfig | None = None) -> SimConfig:
    """A SimConfig from ``values`` over ``base``; unknown keys and wrong types are errors."""
    unknown = sorted(set(values) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown config fields {unknown}; valid fields are: {', '.join(_FIELD_TYPES)}")
    if isinstance(values.get("data"), str):
        values = {**values, "data": data_shorthand(values["data"])}
    values = {k: _joined(v) if k in _LIST_FIELDS else v for k, v in values.items()}
    checked = {k: _coerce(k, v, _FIELD_TYPES[k]) for k, v in values.items() if v is not None}
    return dataclasses.replace(base or SimConfig(), **checked)


def load_config_file(path: str | Path) -> SimConfig:
    """Read a TOML file whose keys are SimConfig fields (optionally under a ``[sim]`` table)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid TOML: {exc}") from None
    return config_from_mapping(data.get("sim", data))
