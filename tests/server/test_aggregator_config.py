"""AggregatorConfig: TOML < FEDLOOM_SERVER_* < flags, validated, errors naming the field and the fix."""

from __future__ import annotations

import pytest

from fedloom.core.errors import ConfigError
from fedloom.server.config import FIELDS, AggregatorConfig, config_from_mapping, load_config

TOML = """
[server]
host = "0.0.0.0"
port = 9000
max_upload_mb = 8

[run]
name = "hospitals"
seed = 7
mode = "async"

[rounds]
max_rounds = 20
fraction = 0.5
threshold = 0.8
deadline_policy = "abandon"

[client]
lr = 0.05

[async]
buffer_size = 4
"""


def write(tmp_path, text=TOML):
    path = tmp_path / "aggregator.toml"
    path.write_text(text)
    return path


def test_defaults():
    config = load_config(environ={})
    assert config == AggregatorConfig()
    assert (config.server.host, config.server.port, config.server.max_upload_bytes) == ("127.0.0.1", 8080, 64 << 20)
    assert (config.run.name, config.run.mode, config.rounds.deadline_policy) == ("default", "sync", "aggregate")
    assert (config.rounds.max_rounds, config.client.batch_size, config.asynchronous.buffer_size) == (10, 32, 2)
    assert not config.server.tls


def test_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path)
    config = load_config(path, environ={})
    assert (config.server.port, config.run.name, config.run.mode, config.asynchronous.buffer_size) == (
        9000,
        "hospitals",
        "async",
        4,
    )
    assert config.server.max_upload_mb == 8.0 and config.client.lr == 0.05 and config.client.epochs == 1
    env = {"FEDLOOM_SERVER_PORT": "9100", "FEDLOOM_SERVER_MAX_ROUNDS": "5", "FEDLOOM_SERVER_DB_URL": "sqlite:///x.db"}
    config = load_config(path, environ=env)
    assert (config.server.port, config.rounds.max_rounds, config.server.db_url) == (9100, 5, "sqlite:///x.db")
    config = load_config(path, environ=env, overrides={"port": 0, "max_rounds": None, "threshold": 1})
    assert (config.server.port, config.rounds.max_rounds, config.rounds.threshold) == (0, 5, 1.0)
    assert config.to_dict()["async"]["buffer_size"] == 4


def test_every_field_has_a_unique_flat_name():
    tables = {table for table, _ in FIELDS.values()}
    assert tables == {
        "server",
        "run",
        "rounds",
        "client",
        "async",
        "strategy",
        "tls",
        "tracking",
        "evaluation",
        "privacy",
        "secagg",
        "federation",
    }
    # + [server] upload_timeout_seconds, rate_limit_per_second, rate_limit_burst, max_rejections_per_round
    # + [server] linger_seconds, [tls] client_ca_file and [strategy] feddyn_alpha
    # + the six [tracking] keys (sinks, tensorboard_dir, mlflow_tracking_uri, mlflow_experiment, wandb_*)
    # + [evaluation] evaluator, evaluator_args
    # + the ten [privacy] dp_* keys
    # + [client] dp_sgd_noise, dp_sgd_clip, dp_sgd_delta
    # + the eight [secagg] keys (secure_aggregation, clip_range, bits, secagg_threshold, neighbours,
    #   max_total_samples, rounding, stage_timeout_seconds)
    # + [server] blob_url
    # + [client] compression, compression_topk
    # + the three [federation] keys (cluster, clusters, max_staleness_rounds)
    assert len(FIELDS) == 27 + 21 + 4 + 1 + 6 + 2 + 10 + 3 + 8 + 1 + 2 + 3


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"rounds": {"threshold": 1.5}}, r"\[rounds\] threshold must be in \(0, 1\], got 1.5 \(set threshold"),
        ({"rounds": {"fraction": 0}}, r"\[rounds\] fraction"),
        ({"rounds": {"max_rounds": 0}}, r"\[rounds\] max_rounds must be >= 1"),
        ({"rounds": {"deadline_policy": "panic"}}, r"\[rounds\] deadline_policy must be one of 'aggregate'"),
        ({"rounds": {"deadline_seconds": -1}}, r"\[rounds\] deadline_seconds must be a positive number"),
        ({"run": {"mode": "semi"}}, r"\[run\] mode must be one of 'sync', 'async'"),
        ({"run": {"name": "two words"}}, r"\[run\] name must be 1-64 characters"),
        ({"server": {"port": 70000}}, r"\[server\] port must be in 0-65535"),
        ({"server": {"port": "80"}}, r"\[server\] port must be an int, got str"),
        ({"server": {"tls_cert": "cert.pem"}}, r"\[server\] tls_key is missing: HTTPS needs both"),
        ({"server": {"max_upload_mb": 0}}, r"\[server\] max_upload_mb"),
        ({"client": {"lr": 0}}, r"\[client\] lr must be a positive number"),
        ({"client": {"compression": "gzip"}}, r"\[client\] compression must be one of 'none', 'float16'"),
        ({"client": {"compression_topk": 1.5}}, r"\[client\] compression_topk must be in \(0, 1\], got 1.5"),
        ({"client": {"epochs": True}}, r"\[client\] epochs must be an int, got bool"),
        ({"async": {"staleness_exponent": -0.5}}, r"\[async\] staleness_exponent must be >= 0"),
        ({"async": {"buffer_size": 0}}, r"\[async\] buffer_size must be >= 1"),
        ({"rounds": {"treshold": 0.5}}, r"unknown key\(s\) \['treshold'\] in \[rounds\]; valid keys are: max_rounds"),
        ({"round": {"threshold": 0.5}}, r"unknown table\(s\) \['round'\]"),
        ({"rounds": 3}, r"\[rounds\] must be a table"),
    ],
)
def test_errors_name_the_field_and_the_fix(data, words):
    with pytest.raises(ConfigError, match=words):
        config_from_mapping(data)


def test_error_says_where_to_set_the_value():
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"rounds": {"min_agents": 0}})
    message = str(info.value)
    assert "aggregator.toml" in message and "FEDLOOM_SERVER_MIN_AGENTS" in message and "--min-agents" in message


def test_environment_errors():
    with pytest.raises(ConfigError, match="unknown environment variable FEDLOOM_SERVER_PROT"):
        load_config(environ={"FEDLOOM_SERVER_PROT": "1"})
    with pytest.raises(ConfigError, match=r"FEDLOOM_SERVER_PORT='http'.*\[server\] port must be an integer"):
        load_config(environ={"FEDLOOM_SERVER_PORT": "http"})
    with pytest.raises(ConfigError, match=r"\[rounds\] threshold"):
        load_config(environ={"FEDLOOM_SERVER_THRESHOLD": "2"})
    config = load_config(environ={"FEDLOOM_SERVER_TLS_CERT": "", "OTHER": "x", "FEDLOOM_SERVER_LR": "0.5"})
    assert config.server.tls_cert is None and config.client.lr == 0.5


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\nport = 1"), environ={})
    with pytest.raises(ConfigError, match=r"unknown override setting 'prot'"):
        load_config(environ={}, overrides={"prot": 1})


def test_replace_revalidates():
    config = AggregatorConfig().replace(port=0, mode="async")
    assert config.server.port == 0 and config.run.mode == "async"
    with pytest.raises(ConfigError, match=r"\[rounds\] min_updates"):
        config.replace(min_updates=0)


def test_max_num_samples_has_a_bounded_default_and_is_checked():
    assert AggregatorConfig().rounds.max_num_samples == 1_000_000_000
    assert AggregatorConfig().replace(max_num_samples=50).rounds.max_num_samples == 50
    for bad in (0, -5, 2**63):
        with pytest.raises(ConfigError, match=r"\[rounds\] max_num_samples must be in 1-"):
            AggregatorConfig().replace(max_num_samples=bad)


def test_every_strategy_parameter_can_be_set_in_the_strategy_table():
    from fedloom.algorithms.registry import PARAM_TYPES
    from fedloom.server.config import StrategySection

    assert set(PARAM_TYPES) <= {f for f in StrategySection.__dataclass_fields__}
    assert StrategySection(strategy="feddyn", feddyn_alpha=0.05).params() == {"feddyn_alpha": 0.05}
