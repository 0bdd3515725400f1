"""The aggregator's configuration: ``aggregator.toml``, then ``FEDLOOM_SERVER_*`` variables, then flags.

Precedence is flags > environment > file > defaults. Every value is checked once,
here, and every error names the field (``[rounds] threshold``), what was wrong and
how to set it; unknown keys in the file and unknown ``FEDLOOM_SERVER_*`` variables are
errors, so a typo never silently falls back to a default.

The file has five tables::

    [server]  host, port, tls_cert, tls_key, max_upload_mb, upload_timeout_seconds,
              rate_limit_per_second, rate_limit_burst, max_rejections_per_round, db_url, home
    [run]     name, seed, initial_model, mode
    [rounds]  max_rounds, fraction, min_agents, threshold, min_updates,
              deadline_seconds, deadline_policy, check_interval_seconds, max_num_samples
    [client]  epochs, batch_size, lr
    [async]   buffer_size, staleness_exponent, mixing
    [strategy] strategy, aggregator, server_opt and the strategy parameters
              (server_lr, proximal_mu, trim_beta, byzantine_f, ... see docs/algorithms.md)
    [tls]     client_ca_file (mutual TLS: agents must present a certificate of that CA)

Field names are unique across tables, so the variable of a field is
``FEDLOOM_SERVER_`` + its upper-case name (``FEDLOOM_SERVER_MAX_ROUNDS=20``) and its
flag is ``--`` + the name with dashes (``--max-rounds 20``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.core.redaction import redact_url
from fedloom.server.tls_settings import TlsSection

ENV_PREFIX = "FEDLOOM_SERVER_"
MODES = ("sync", "async")
DEADLINE_POLICIES = ("aggregate", "extend", "abandon")
_RUN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: ``[rounds] max_num_samples`` by default: far above any one site's dataset, far below 2**62
DEFAULT_MAX_NUM_SAMPLES = 1_000_000_000
_INT64_MAX = 2**63 - 1


def _fix(section: str, name: str) -> str:
    """Where a field can be set, for the end of an error message."""
    flag = "--" + name.replace("_", "-")
    return f"(set {name} in the [{section}] table of aggregator.toml, {ENV_PREFIX}{name.upper()} or {flag})"


def _fail(section: str, name: str, problem: str) -> ConfigError:
    return ConfigError(f"[{section}] {name} {problem} {_fix(section, name)}")


def _at_least(section: str, name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise _fail(section, name, f"must be >= {minimum:g}, got {value!r}")


def _positive(section: str, name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise _fail(section, name, f"must be a positive number, got {value!r}")


def _fraction(section: str, name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise _fail(section, name, f"must be in (0, 1], got {value!r}")


def _choice(section: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _fail(section, name, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")


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
    #: once the run is finished, how long to keep serving so agents can fetch the final model
    #: (the server exits earlier when every agent has been told); ``fedloom server --keep-serving`` never exits
    linger_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise _fail("server", "host", "must not be empty, e.g. 127.0.0.1 or 0.0.0.0")
        if not 0 <= self.port <= 65535:
            raise _fail("server", "port", f"must be in 0-65535 (0 picks a free port), got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise _fail("server", missing, "is missing: HTTPS needs both tls_cert and tls_key")
        _positive("server", "max_upload_mb", self.max_upload_mb)
        _positive("server", "upload_timeout_seconds", self.upload_timeout_seconds)
        _positive("server", "rate_limit_per_second", self.rate_limit_per_second)
        _at_least("server", "rate_limit_burst", self.rate_limit_burst, 1)
        _at_least("server", "max_rejections_per_round", self.max_rejections_per_round, 0)
        if not (math.isfinite(self.linger_seconds) and self.linger_seconds >= 0):
            raise _fail("server", "linger_seconds", f"must be a number >= 0, got {self.linger_seconds!r}")

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
            raise _fail("run", "name", f"must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', got {self.name!r}")
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
            raise _fail("rounds", "max_num_samples", f"must be in 1-{_INT64_MAX}, got {self.max_num_samples!r}")


@dataclass(frozen=True)
class ClientSection:
    """``[client]``: the local training settings every agent receives in its task."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01

    def __post_init__(self) -> None:
        _at_least("client", "epochs", self.epochs, 1)
        _at_least("client", "batch_size", self.batch_size, 1)
        _positive("client", "lr", self.lr)


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
            raise _fail("async", "mixing", f"must be in [0, 1] (0 = FedBuff), got {self.mixing!r}")
        if not (self.staleness_exponent >= 0 and math.isfinite(self.staleness_exponent)):
            raise _fail("async", "staleness_exponent", f"must be >= 0, got {self.staleness_exponent!r}")


@dataclass(frozen=True)
class StrategySection:
    """``[strategy]``: the algorithm, by name, with its parameters (docs/algorithms.md).

    Unset parameters keep the algorithm's defaults; a parameter the chosen strategy does
    not use is an error. Server optimisers keep state between rounds; a restarted
    aggregator continues from the state stored with the newest global model (docs/deployment.md).
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
            raise ConfigError(f"[strategy] {exc} {_fix('strategy', 'strategy')}") from None

    def params(self) -> dict[str, Any]:
        """The parameters that are set."""
        names = ("strategy", "aggregator", "server_opt")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in names and v is not None}


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything ``fedloom server`` needs, validated."""

    server: ServerSection = field(default_factory=ServerSection)
    run: RunSection = field(default_factory=RunSection)
    rounds: RoundsSection = field(default_factory=RoundsSection)
    client: ClientSection = field(default_factory=ClientSection)
    asynchronous: AsyncSection = field(default_factory=AsyncSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    tls: TlsSection = field(default_factory=TlsSection)

    def __post_init__(self) -> None:
        chosen = self.strategy
        if self.run.mode == "async" and (chosen.strategy != "fedavg" or chosen.aggregator or chosen.server_opt):
            raise ConfigError(
                f"[strategy] strategy = {chosen.strategy!r} is not available with [run] mode = 'async': the"
                " asynchronous mode aggregates with FedBuff (set strategy = 'fedavg', or mode = 'sync')"
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The TOML-shaped view (table name -> fields), as stored with the run."""
        return {table: dataclasses.asdict(getattr(self, attr)) for table, attr in _TABLES.items()}

    def to_record(self) -> dict[str, dict[str, Any]]:
        """:meth:`to_dict` without secrets (the ``db_url`` password): what is stored with the run."""
        tables = self.to_dict()
        if self.server.db_url is not None:
            tables["server"]["db_url"] = redact_url(self.server.db_url)
        return tables

    def replace(self, **fields: Any) -> AggregatorConfig:
        """A copy with the named fields (flat names, as for flags) changed and re-validated."""
        return _build(self.to_dict(), fields, "override")


#: TOML table name -> attribute of AggregatorConfig (``async`` is a Python keyword)
_TABLES = {
    "server": "server",
    "run": "run",
    "rounds": "rounds",
    "client": "client",
    "async": "asynchronous",
    "strategy": "strategy",
    "tls": "tls",
}
_SECTION_TYPES: dict[str, type[Any]] = {
    "server": ServerSection,
    "run": RunSection,
    "rounds": RoundsSection,
    "client": ClientSection,
    "async": AsyncSection,
    "strategy": StrategySection,
    "tls": TlsSection,
}
_OPTIONAL_STR = "str | None"
_OPTIONAL_FLOAT = "float | None"
_OPTIONAL_INT = "int | None"


def _field_kinds() -> dict[str, tuple[str, str]]:
    """Every field name -> (table, type name); names are unique across tables (checked here)."""
    kinds: dict[str, tuple[str, str]] = {}
    for table, cls in _SECTION_TYPES.items():
        for f in dataclasses.fields(cls):
            assert f.name not in kinds, f"config field {f.name} is defined twice"
            kinds[f.name] = (table, str(f.type))
    return kinds


FIELDS = _field_kinds()


def _coerce(table: str, name: str, value: Any, kind: str) -> Any:
    """Check a value from TOML or a flag against the field's type (ints are fine for floats)."""
    if kind in (_OPTIONAL_STR, _OPTIONAL_FLOAT, _OPTIONAL_INT) and value is None:
        return None
    kind = kind.removesuffix(" | None")
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = {"int": int, "float": float, "str": str}[kind]
    if not isinstance(value, expected) or isinstance(value, bool):
        shown = "a string" if expected is str else f"an {expected.__name__}" if kind == "int" else "a number"
        raise _fail(table, name, f"must be {shown}, got {type(value).__name__} {value!r}")
    return value


def _parse_env(table: str, name: str, text: str, kind: str, variable: str) -> Any:
    """Turn a ``FEDLOOM_SERVER_*`` string into the field's type."""
    if kind == _OPTIONAL_STR:
        return text or None
    if kind == "str":
        return text
    if not text and kind in (_OPTIONAL_FLOAT, _OPTIONAL_INT):
        return None
    kind = kind.removesuffix(" | None")
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        what = "an integer" if kind == "int" else "a number"
        raise ConfigError(f"{variable}={text!r}: [{table}] {name} must be {what}") from None


def _build(tables: Mapping[str, Mapping[str, Any]], flat: Mapping[str, Any], source: str) -> AggregatorConfig:
    """Apply flat ``name -> value`` overrides (None = not given) to TOML-shaped tables and validate."""
    values = {table: dict(tables.get(table, {})) for table in _TABLES}
    for name, value in flat.items():
        if name not in FIELDS:
            raise ConfigError(f"unknown {source} setting {name!r}; valid settings are: {', '.join(FIELDS)}")
        if value is not None:
            values[FIELDS[name][0]][name] = value
    sections: dict[str, Any] = {}
    for table, attr in _TABLES.items():
        checked = {k: _coerce(table, k, v, FIELDS[k][1]) for k, v in values[table].items()}
        sections[attr] = _SECTION_TYPES[table](**checked)
    return AggregatorConfig(**sections)


def config_from_mapping(data: Mapping[str, Any]) -> AggregatorConfig:
    """A config from TOML-shaped data (``{"server": {...}, "rounds": {...}}``); unknown keys are errors."""
    unknown_tables = sorted(set(data) - set(_TABLES))
    if unknown_tables:
        raise ConfigError(
            f"unknown table(s) {unknown_tables} in the aggregator config; valid tables are: {', '.join(_TABLES)}"
        )
    for table, values in data.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{table}] must be a table of settings, got {type(values).__name__}")
        allowed = [f.name for f in dataclasses.fields(_SECTION_TYPES[table])]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in [{table}]; valid keys are: {', '.join(allowed)}")
    return _build(data, {}, "config")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file (not yet validated)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist (pass --config the path of aggregator.toml)")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(file)!r} cannot be read: {exc}") from None


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``FEDLOOM_SERVER_*`` variables as field values; an unknown variable is an error."""
    found: dict[str, Any] = {}
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name not in FIELDS:
            known = ", ".join(ENV_PREFIX + n.upper() for n in FIELDS)
            raise ConfigError(f"unknown environment variable {variable}; fedloom server reads: {known}")
        table, kind = FIELDS[name]
        found[name] = _parse_env(table, name, text, kind, variable)
    return found


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AggregatorConfig:
    """The aggregator config: defaults < ``path`` (TOML) < ``environ`` (default ``os.environ``) < ``overrides``.

    ``overrides`` maps flat field names to values; None values are ignored (a flag not given).
    """
    base = config_from_mapping(read_config_file(path)) if path is not None else AggregatorConfig()
    env = env_overrides(os.environ if environ is None else environ)
    layered = _build(base.to_dict(), env, "environment")
    config = _build(layered.to_dict(), dict(overrides or {}), "override")
    if config.tls.client_ca_file is not None and not config.server.tls:  # checked once every layer is in
        raise _fail("tls", "client_ca_file", "needs HTTPS: set [server] tls_cert and tls_key too")
    return config
