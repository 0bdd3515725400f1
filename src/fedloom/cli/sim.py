"""``fedloom sim``: run a built-in simulation from flags and/or a TOML config file."""

from __future__ import annotations

import argparse
from typing import Any

from fedloom.algorithms.dp import PRIVACY_MODES
from fedloom.algorithms.privacy_accountant import ACCOUNTANTS
from fedloom.algorithms.registry import AGGREGATORS, PARAM_TYPES, SERVER_OPTIMIZERS, STRATEGIES
from fedloom.cli.data_flags import DATA_FLAGS, add_data_flags, add_model_flags, data_options
from fedloom.core.errors import ConfigError
from fedloom.server.rounds import DEADLINE_POLICIES
from fedloom.sim.adversary import ATTACKS
from fedloom.sim.clock import DISTRIBUTIONS
from fedloom.sim.config import (
    EXECUTORS,
    MODES,
    PARTITIONS,
    SimConfig,
    config_from_mapping,
    load_config_file,
)
from fedloom.sim.config_data import DATASETS, data_shorthand
from fedloom.sim.partition_inner import parse_client_sizes
from fedloom.sim.partition_size import SIZE_SKEW_KINDS
from fedloom.tracking.settings import TrackingSettings, parse_track_flag


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sim",
        help="simulate a federation on one machine",
        description="Simulate federated training. Flags override values from --config.",
    )
    defaults = SimConfig()
    add = parser.add_argument
    add("--config", help="TOML file whose keys are the long option names (with _ for -)")
    add("--dataset", choices=DATASETS, help="a built-in dataset (default digits); or --data for a local one")
    add("--data-dir", help="folder holding the dataset files (default: $FEDLOOM_DATA or the system location)")
    add("--clients", type=int, help=f"number of clients (default {defaults.clients})")
    add("--partition", choices=PARTITIONS, help=f"how data is split (default {defaults.partition})")
    add("--alpha", type=float, help=f"Dirichlet / quantity-skew concentration (default {defaults.alpha})")
    add("--classes-per-client", type=int, help="classes per client for --partition shards (default 2)")
    _add_partition_flags(parser)
    group = add_data_flags(parser)
    group.add_argument("--by", dest="partition_by", metavar="COL", help="--partition natural: the site column")
    add("--fraction", type=float, help=f"fraction C of clients per round (default {defaults.fraction})")
    add("--min-clients", type=int, help="minimum clients per round (default 1)")
    add("--rounds", type=int, help=f"rounds (default {defaults.rounds})")
    add("--epochs", type=int, help="local epochs E (default 1)")
    add("--batch-size", type=int, help="local batch size B (default 32)")
    add("--lr", type=float, help=f"client learning rate (default {defaults.lr})")
    add("--seed", type=int, help="seed for partition, sampling, init and shuffling (default 0)")
    add("--device", help="torch device, e.g. cpu or cuda (default cpu)")
    add("--executor", choices=EXECUTORS, help="sequential (reproducible reference), parallel (a process per core), ray")
    add("--cohort", help="batched cohort training: auto (default, where the model is safe), off, or a size N")
    add("--workers", type=int, help="worker processes for --executor parallel (default: one per core)")
    add("--max-retries", type=int, help="re-runs of a client whose worker process died (default 0)")
    add("--client-eval-fraction", type=float, help="fraction of clients evaluated on local data each round")
    add("--on-client-error", choices=("fail", "skip"), help="a crashing client fails the run, or is skipped")
    add("--keep-local-models", action="store_true", default=None, help="store every local model's tensors too")
    add("--name", help="a name for the run")
    _add_strategy_flags(parser)
    add_model_flags(parser.add_argument_group("the model, its options and imbalanced labels (as fedloom agent)"))
    _add_dp_sgd_flags(parser)
    squeeze = parser.add_argument_group("compressed updates (each client's delta; error feedback kept locally)")
    squeeze.add_argument("--compression", choices=("none", "float16", "int8", "topk"), help="scheme (default none)")
    squeeze.add_argument("--compression-topk", type=float, metavar="FRACTION", help="share of entries topk sends")
    _add_world_flags(parser)
    _add_ray_flags(parser)
    _add_privacy_flags(parser)
    local = parser.add_argument_group("personalisation evaluation")
    local.add_argument("--local-test-fraction", type=float, help="share of each client's data held out for its tests")
    local.add_argument("--finetune-epochs", type=int, help="local epochs before the client_finetuned_* evaluation")
    _add_record_flags(parser)
    parser.set_defaults(func=run)


def _add_record_flags(parser: argparse.ArgumentParser) -> None:
    """Where the run is recorded, what it feeds, and continuing an interrupted one."""
    add = parser.add_argument
    add("--home", help="where runs are stored (default $FEDLOOM_HOME or ./fedloom-runs)")
    add("--no-store", action="store_true", help="do not record the run")
    add("--track", metavar="SINKS", help="feed sinks, comma-separated: tensorboard,mlflow,wandb (docs/tracking.md)")
    add("--resume", metavar="RUN_ID", help="continue an interrupted run from the store (its recorded settings)")


def _add_partition_flags(parser: argparse.ArgumentParser) -> None:
    """The parameters of the newer partition schemes (docs/partitioning.md), one scheme each."""
    group = parser.add_argument_group("partition schemes (docs/partitioning.md)")
    group.add_argument("--client-sizes", type=_client_sizes, metavar="N,N,...", help="inner_dirichlet: client sizes")
    group.add_argument("--size-skew", choices=SIZE_SKEW_KINDS, help="size_skew: the size law (default linear)")
    group.add_argument("--size-skew-rate", type=float, help="size_skew exponential: size ~ exp(rate * i) (default 1)")
    group.add_argument("--feature-clusters", type=int, help="feature_skew: k-means clusters to deal (default 10)")


def _client_sizes(text: str) -> list[int]:
    """``--client-sizes 600,747``; a malformed list is argparse's usage error, with the fix."""
    try:
        return parse_client_sizes(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_world_flags(parser: argparse.ArgumentParser) -> None:
    """Adversaries, unreliable clients on the simulated clock, and the asynchronous lifecycle."""
    attack = parser.add_argument_group("simulated adversaries (docs/algorithms.md)")
    attack.add_argument("--attack", choices=ATTACKS, help="attack by a fraction of clients (default none)")
    attack.add_argument("--attack-fraction", type=float, help="fraction of malicious clients (default 0.2)")
    attack.add_argument("--attack-scale", type=float, help="attack strength; 0 = the attack's default")
    clock = parser.add_argument_group("unreliable clients (simulated clock)")
    clock.add_argument("--speeds", choices=("none", *DISTRIBUTIONS), help="client speed distribution (default none)")
    clock.add_argument("--speed-spread", type=float, help="lognormal sigma or Pareto shape (default 1.0)")
    clock.add_argument("--dropout", type=float, help="probability a selected client drops out of a round")
    clock.add_argument("--deadline-seconds", type=float, help="simulated round deadline (the deployed close policy)")
    clock.add_argument("--on-deadline", choices=DEADLINE_POLICIES, help="at the deadline: aggregate, extend, abandon")
    clock.add_argument("--threshold", type=float, help="fraction of selected clients that closes a round early")
    modes = parser.add_argument_group("asynchronous rounds (the deployed [async] lifecycle)")
    modes.add_argument("--mode", choices=MODES, help="sync rounds (default), or fedbuff / fedasync")
    modes.add_argument("--buffer-size", type=int, help="fedbuff: arrivals per new version (default 10)")
    modes.add_argument("--staleness-exponent", type=float, help="weight (1 + staleness)^-a (default 0.5)")
    modes.add_argument("--mixing", type=float, help="fedasync: mixing rate (default 0.6)")
    modes.add_argument("--concurrency", type=int, help="clients training at once in async mode (default 10)")
    secure = parser.add_argument_group("secure aggregation (docs/privacy.md)")
    secure.add_argument("--secagg", action="store_true", default=None, help="aggregate through SecAgg+ (masked sums)")
    secure.add_argument("--secagg-bits", type=int, help="quantisation bits (default 24)")
    secure.add_argument("--secagg-clip", type=float, help="clip each update element to [-c, c] (default 1.0)")
    secure.add_argument("--secagg-threshold", type=float, help="shares needed: fraction of neighbours, or a count > 1")
    secure.add_argument("--secagg-neighbours", type=int, help="graph degree k (default 0: every selected client)")
    secure.add_argument(
        "--secagg-dropout", action="append", metavar="STAGE=P", help="drop clients at a stage (advertise, share,"
        " collect, unmask) with probability P; repeatable"
    )  # fmt: skip


def _add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """The Ray executor (docs/architecture.md): where it runs and what each client reserves there."""
    ray = parser.add_argument_group("the Ray executor (--executor ray; pip install 'fedloom[ray]')")
    ray.add_argument("--ray-address", help="join this cluster (auto, HOST:6379, ray://HOST:10001); default: local")
    ray.add_argument("--ray-cpus-per-client", type=float, metavar="N", help="CPUs each client reserves (default 1)")
    ray.add_argument("--ray-gpus-per-client", type=float, metavar="N", help="GPUs each client reserves (default 0)")
    ray.add_argument("--ray-memory-per-client", metavar="SIZE", help="memory each client reserves: bytes, 2GB, 512MiB")
    ray.add_argument("--ray-cpus", type=int, metavar="N", help="CPUs of the local Ray (default: one per core)")
    ray.add_argument("--ray-retries", type=int, metavar="N", help="re-runs of a client lost with its node (default 3)")


#: ``--dp-X`` flag -> PrivacySettings field (``--dp MODE`` is ``mode``)
DP_FLAGS = {
    "dp": "mode", "dp_noise": "noise_multiplier", "dp_clip": "clip_norm", "dp_delta": "delta",
    "dp_adaptive_clip": "adaptive_clip", "dp_target_quantile": "target_quantile", "dp_clip_lr": "clip_lr",
    "dp_clip_count_stddev": "clip_count_stddev", "dp_target_epsilon": "target_epsilon",
    "dp_accountant": "accountant", "dp_noise_seed": "noise_seed",
}  # fmt: skip
_NOT_CONFIG = {"config", "home", "no_store", "resume", "track", "func", "command", *PARAM_TYPES, *DP_FLAGS}
_NOT_CONFIG |= {"data", *DATA_FLAGS}  # gathered into the ``data`` table by data_from_flags


def _add_privacy_flags(parser: argparse.ArgumentParser) -> None:
    """User-level differential privacy (docs/privacy.md); the names of PrivacySettings."""
    dp = parser.add_argument_group("differential privacy (docs/privacy.md)")
    dp.add_argument("--dp", choices=PRIVACY_MODES, help="central DP-FedAvg, client-side clipping+noise, or local DP")
    dp.add_argument("--dp-noise", type=float, metavar="Z", help="noise multiplier z (noise std z*C on the sum)")
    dp.add_argument("--dp-clip", type=float, metavar="C", help="L2 clip norm C of each update")
    dp.add_argument("--dp-delta", type=float, metavar="D", help="delta of (epsilon, delta), below 1/clients")
    dp.add_argument("--dp-adaptive-clip", action="store_true", default=None, help="adaptive clipping (central)")
    dp.add_argument("--dp-target-quantile", type=float, help="adaptive clipping: quantile gamma (default 0.5)")
    dp.add_argument("--dp-clip-lr", type=float, help="adaptive clipping: learning rate eta (default 0.2)")
    dp.add_argument("--dp-clip-count-stddev", type=float, help="adaptive clipping: count noise (default m/20)")
    dp.add_argument("--dp-target-epsilon", type=float, metavar="E", help="finish before epsilon would exceed E")
    dp.add_argument("--dp-accountant", choices=ACCOUNTANTS, help="rdp (default) or pld")
    dp.add_argument("--dp-noise-seed", type=int, help="reproducible noise: for tests only, gives NO privacy")


def privacy_from_flags(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """The config file's privacy settings, overridden by any ``--dp-*`` flag given."""
    given = {field: getattr(args, flag) for flag, field in DP_FLAGS.items() if getattr(args, flag, None) is not None}
    if given and not base and "mode" not in given:
        raise ConfigError("--dp-* flags need --dp central|client|local (which kind of differential privacy)")
    return {**base, **given}


def _add_strategy_flags(parser: argparse.ArgumentParser) -> None:
    """``--strategy`` / ``--aggregator`` / ``--server-opt`` and one flag per strategy parameter."""
    group = parser.add_argument_group("strategy (docs/algorithms.md)")
    group.add_argument("--strategy", choices=sorted(STRATEGIES), help="the algorithm (default fedavg)")
    group.add_argument("--aggregator", choices=sorted(AGGREGATORS), help="replace the strategy's aggregator")
    group.add_argument("--server-opt", choices=sorted(SERVER_OPTIMIZERS), help="add or replace a server optimiser")
    for name, kind in PARAM_TYPES.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar=kind.__name__.upper())


def _add_dp_sgd_flags(parser: argparse.ArgumentParser) -> None:
    """Sample-level DP-SGD for every client (docs/privacy.md); the server sends the settings."""
    group = parser.add_argument_group("sample-level DP-SGD (torch models; docs/privacy.md)")
    group.add_argument("--dp-sgd", action="store_true", default=None, help="every client trains with DP-SGD")
    group.add_argument("--dp-sgd-noise", type=float, help="noise multiplier z = noise std / clip norm (default 1.0)")
    group.add_argument("--dp-sgd-clip", type=float, help="per-example gradient clip norm C (default 1.0)")
    group.add_argument("--dp-sgd-delta", type=float, help="delta at which each client's epsilon is reported (1e-5)")


def strategy_params_from_flags(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """The config file's strategy parameters, overridden by any given on the command line."""
    given = {name: getattr(args, name) for name in PARAM_TYPES if getattr(args, name, None) is not None}
    return {**base, **given}


def run(args: argparse.Namespace) -> int:
    from fedloom.sim.progress import ProgressPrinter
    from fedloom.sim.tasks import simulate_config

    if args.resume:
        return _resume(args)
    base = load_config_file(args.config) if args.config else SimConfig()
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    flags["strategy_params"] = strategy_params_from_flags(args, base.strategy_params)
    flags["privacy"] = privacy_from_flags(args, base.privacy)
    flags["secagg_dropout"] = _secagg_dropout(args.secagg_dropout, base.secagg_dropout)
    flags["data"] = data_from_flags(args, base.data)
    config = config_from_mapping(flags, base)
    tracking = _tracking(args)  # a wrong sink is refused before anything is printed or stored
    print(
        f"fedloom sim: {config.dataset_name()} / {config.model}, {_clients(config)} ({config.partition}), "
        f"C={config.fraction}, E={config.epochs}, B={config.batch_size}, lr={config.lr}, {config.rounds} rounds, "
        f"strategy {config.strategy}"
        + (f", DP {config.privacy['mode']}" if config.privacy else "")
        + (
            f", DP-SGD z={config.dp_sgd_noise} C={config.dp_sgd_clip} delta={config.dp_sgd_delta:g}"
            if config.dp_sgd
            else ""
        )
    )
    store: Any = None
    if not args.no_store:
        from fedloom.store import SqlStore

        store = SqlStore.open_default(args.home)
    simulate_config(config, store=store, tracking=tracking, observers=[ProgressPrinter(config.rounds)])
    return 0


def _clients(config: SimConfig) -> str:
    """``10 clients``, or ``one client per site`` for a natural partition that follows the data."""
    default = SimConfig.__dataclass_fields__["clients"].default
    if config.partition == "natural" and config.clients == default:
        return f"one client per {config.partition_by}"
    return f"{config.clients} clients"


def data_from_flags(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any] | None:
    """The config file's ``data`` table, with ``--data KIND:PATH`` and the description flags over it."""
    options = data_options(args)
    if args.data is None and not options:
        return None  # nothing given: the config file's table (or none) stands
    if args.data is None and not base:
        flags = ", ".join("--" + name.replace("_", "-") for name in options)
        raise ConfigError(f"{flags} describe a local dataset: add --data KIND:PATH (e.g. --data table:hospital.csv)")
    given = data_shorthand(args.data) if args.data is not None else {}
    return {**base, **given, **options}


def _secagg_dropout(given: list[str] | None, base: dict[str, Any]) -> dict[str, Any]:
    """``--secagg-dropout collect=0.1`` (repeatable) over the config file's table."""
    out = dict(base)
    for item in given or []:
        stage, sep, value = item.partition("=")
        try:
            out[stage.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--secagg-dropout {item!r}: write STAGE=P, e.g. --secagg-dropout collect=0.1")
    return out


def _tracking(args: argparse.Namespace) -> TrackingSettings | None:
    """``--track a,b``: the sinks to feed, writing under ``--home`` (checked before any round runs)."""
    if not args.track:
        return None
    try:
        return TrackingSettings(sinks=parse_track_flag(args.track))
    except ConfigError as exc:
        raise ConfigError(f"--track {args.track}: {exc}") from None


def _resume(args: argparse.Namespace) -> int:
    """``fedloom sim --resume RUN_ID``: continue an interrupted run with the settings it was started with."""
    from fedloom.sim.progress import ProgressPrinter
    from fedloom.sim.tasks import resume_config, simulate_config
    from fedloom.store import SqlStore

    described = {"data", *DATA_FLAGS}
    given = sorted(k for k, v in vars(args).items() if (k not in _NOT_CONFIG or k in described) and v is not None)
    if args.no_store or args.config or given:
        extra = ", ".join(["--no-store"] * bool(args.no_store) + ["--config"] * bool(args.config) + given)
        raise ConfigError(f"--resume continues a run with its recorded settings; drop {extra}")
    with SqlStore.open_default(args.home) as store:
        run_id = store.get_run(args.resume).id
        config = resume_config(store, run_id)
        what = f"{config.dataset_name()} / {config.model}, {config.rounds} rounds"
        print(f"fedloom sim: resuming run {run_id[:8]} ({what})")
        simulate_config(
            config, store=store, resume=run_id, tracking=_tracking(args), observers=[ProgressPrinter(config.rounds)]
        )
    return 0
