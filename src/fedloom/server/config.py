"""The aggregator's configuration: ``aggregator.toml``, then ``FEDLOOM_SERVER_*`` variables, then flags.

Precedence is flags > environment > file > defaults. Every value is checked once, by
its section (:mod:`fedloom.server.config_sections`), and every error names the field
(``[rounds] threshold``), what was wrong and how to set it; unknown keys in the file and
unknown ``FEDLOOM_SERVER_*`` variables are errors, so a typo never silently falls back
to a default.

The file has these tables::

    [server]  host, port, tls_cert, tls_key, max_upload_mb, upload_timeout_seconds,
              rate_limit_per_second, rate_limit_burst, max_rejections_per_round, db_url, home
    [run]     name, seed, initial_model, mode
    [rounds]  max_rounds, fraction, min_agents, threshold, min_updates,
              deadline_seconds, deadline_policy, check_interval_seconds, max_num_samples
    [client]  epochs, batch_size, lr, dp_sgd_noise, dp_sgd_clip, dp_sgd_delta (sample-level DP-SGD)
    [async]   buffer_size, staleness_exponent, mixing
    [strategy] strategy, aggregator, server_opt and the strategy parameters
              (server_lr, proximal_mu, trim_beta, byzantine_f, ... see docs/algorithms.md)
    [tls]     client_ca_file (mutual TLS: agents must present a certificate of that CA)
    [tracking] sinks (a list), tensorboard_dir, mlflow_tracking_uri, mlflow_experiment,
              wandb_project, wandb_mode (docs/tracking.md)
    [evaluation] evaluator, evaluator_args (the aggregator tests each global model itself)
    [secagg]  secure_aggregation, clip_range, bits, secagg_threshold, neighbours,
              max_total_samples, rounding, stage_timeout_seconds (docs/protocol.md)
    [federation] cluster, clusters, max_staleness_rounds (several aggregators, docs/deployment.md)

Field names are unique across tables, so the variable of a field is
``FEDLOOM_SERVER_`` + its upper-case name (``FEDLOOM_SERVER_MAX_ROUNDS=20``) and its
flag is ``--`` + the name with dashes (``--max-rounds 20``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedloom.core.errors import ConfigError
from fedloom.core.redaction import redact_url
from fedloom.server.config_sections import (
    DEADLINE_POLICIES,
    DEFAULT_MAX_NUM_SAMPLES,
    ENV_PREFIX,
    MODES,
    AsyncSection,
    ClientSection,
    EvaluationSection,
    PrivacySection,
    RoundsSection,
    RunSection,
    ServerSection,
    StrategySection,
    TrackingSection,
    field_error,
)
from fedloom.server.federation_config import FederationSection
from fedloom.server.secagg_config import SecAggSection
from fedloom.server.tls_settings import TlsSection

__all__ = [
    "DEADLINE_POLICIES",
    "DEFAULT_MAX_NUM_SAMPLES",
    "ENV_PREFIX",
    "FIELDS",
    "MODES",
    "AggregatorConfig",
    "AsyncSection",
    "ClientSection",
    "RoundsSection",
    "RunSection",
    "ServerSection",
    "StrategySection",
    "TlsSection",
    "config_from_mapping",
    "env_overrides",
    "load_config",
    "read_config_file",
]


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
    tracking: TrackingSection = field(default_factory=TrackingSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)
    secagg: SecAggSection = field(default_factory=SecAggSection)
    federation: FederationSection = field(default_factory=FederationSection)

    def __post_init__(self) -> None:
        chosen = self.strategy
        if self.federation.enabled:
            _check_federation(self)
        if self.run.mode == "async" and self.privacy.dp_mode is not None:
            raise ConfigError(
                "[privacy] is refused with [run] mode = 'async': FedBuff's arrivals are not a uniform draw of"
                " agents without replacement, which is the sampling the accountant composes (set mode = 'sync')"
            )
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


def _check_federation(config: AggregatorConfig) -> None:
    """What ``[federation]`` cannot run with: rounds are what clusters exchange models at."""
    if config.run.mode != "sync":
        raise ConfigError(
            "[federation] needs [run] mode = 'sync': clusters exchange their models at round closes (set mode = 'sync')"
        )
    name = config.federation.run_name(config.run.name)
    if len(name) > 64:
        raise field_error(
            "run",
            "name",
            f"with cluster {config.federation.cluster!r} makes the run name {name!r},"
            " longer than 64 characters: shorten the federation's name",
        )


#: TOML table name -> attribute of AggregatorConfig (``async`` is a Python keyword)
_TABLES = {
    "server": "server",
    "run": "run",
    "rounds": "rounds",
    "client": "client",
    "async": "asynchronous",
    "strategy": "strategy",
    "tls": "tls",
    "tracking": "tracking",
    "evaluation": "evaluation",
    "privacy": "privacy",
    "secagg": "secagg",
    "federation": "federation",
}
_SECTION_TYPES: dict[str, type[Any]] = {
    "server": ServerSection,
    "run": RunSection,
    "rounds": RoundsSection,
    "client": ClientSection,
    "async": AsyncSection,
    "strategy": StrategySection,
    "tls": TlsSection,
    "tracking": TrackingSection,
    "evaluation": EvaluationSection,
    "privacy": PrivacySection,
    "secagg": SecAggSection,
    "federation": FederationSection,
}
_OPTIONAL_STR = "str | None"
_OPTIONAL_FLOAT = "float | None"
_OPTIONAL_INT = "int | None"
_NAMES = "tuple[str, ...]"


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
    if kind == _NAMES:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise field_error(table, name, f'must be a list of names, e.g. ["tensorboard"], got {value!r}')
        return tuple(value)
    kind = kind.removesuffix(" | None")
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = {"int": int, "float": float, "str": str}[kind]
    if not isinstance(value, expected) or isinstance(value, bool):
        shown = "a string" if expected is str else f"an {expected.__name__}" if kind == "int" else "a number"
        raise field_error(table, name, f"must be {shown}, got {type(value).__name__} {value!r}")
    return value


def _parse_env(table: str, name: str, text: str, kind: str, variable: str) -> Any:
    """Turn a ``FEDLOOM_SERVER_*`` string into the field's type."""
    if kind == _OPTIONAL_STR:
        return text or None
    if kind == "str":
        return text
    if kind == _NAMES:  # FEDLOOM_SERVER_SINKS=tensorboard,mlflow
        return tuple(part.strip() for part in text.split(",") if part.strip())
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
        raise field_error("tls", "client_ca_file", "needs HTTPS: set [server] tls_cert and tls_key too")
    return config
