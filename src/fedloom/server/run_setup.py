"""Which run an aggregator serves, and with which strategy.

An aggregator resumes the newest unfinished run of its ``[run] name`` (refusing settings
that would change selection or weighting mid-run) or starts a new one; its strategy is
the ``[strategy]`` table with the config's selection, client settings and round criteria.
"""

from __future__ import annotations

import logging

from fedloom.algorithms.compression_settings import with_compression
from fedloom.algorithms.dp import with_privacy
from fedloom.algorithms.dp_sgd_settings import with_dp_sgd
from fedloom.algorithms.registry import build_strategy
from fedloom.algorithms.strategy import RoundCriteria, Strategy
from fedloom.core.compression import CompressionSpec
from fedloom.core.errors import ConfigError, StoreError
from fedloom.core.store_protocols import DeploymentStore
from fedloom.server.config import AggregatorConfig
from fedloom.server.secagg_config import check_secure_run

log = logging.getLogger("fedloom.aggregator")

RUN_KIND = "deployment"
#: run settings a restarted aggregator must not change (they decide selection and weighting)
FIXED_SETTINGS = (
    ("run", "mode"),
    ("run", "seed"),
    ("async", "buffer_size"),
    ("strategy", "strategy"),
    ("secagg", "secure_aggregation"),
)


def deployment_strategy(config: AggregatorConfig) -> Strategy:
    """The ``[strategy]`` with the config's selection, client settings and round criteria (the
    lifecycle's close policy applies them, with the deadline: :func:`fedloom.server.resume.close_policy`)."""
    rounds, client, chosen = config.rounds, config.client, config.strategy
    strategy = build_strategy(
        chosen.strategy,
        fraction=rounds.fraction,
        min_clients=rounds.min_agents,
        epochs=client.epochs,
        batch_size=client.batch_size,
        lr=client.lr,
        criteria=RoundCriteria(threshold=rounds.threshold, min_updates=rounds.min_updates),
        aggregator=chosen.aggregator,
        server_opt=chosen.server_opt,
        params=chosen.params(),
    )
    dp_sgd = client.dp_sgd()
    strategy = strategy if dp_sgd is None else with_dp_sgd(strategy, dp_sgd)
    strategy = with_compression(strategy, _compression(config))
    privacy = config.privacy.settings()
    # [rounds] min_agents is the smallest federation a round opens with: δ and the target ε are
    # checked against it; each round is accounted with the agents registered when it opens
    if privacy is not None:
        strategy = with_privacy(strategy, privacy, rounds.min_agents)
    check_secure_run(config.secagg, config.run.mode, strategy)  # [secagg] refuses what it cannot mask
    return strategy


def _compression(config: AggregatorConfig) -> CompressionSpec | None:
    """``[client] compression``, refused in the asynchronous mode: an agent there trains from
    whichever global model it last fetched, and the aggregator decodes against the open round's."""
    spec = config.client.compression_spec()
    if spec is not None and config.run.mode != "sync":
        raise ConfigError(
            f"[client] compression = {spec.scheme!r} needs [run] mode = 'sync': a compressed update is a delta"
            " against the round's global model, which asynchronous agents do not share (set compression = 'none')"
        )
    return spec


def open_run(config: AggregatorConfig, store: DeploymentStore) -> tuple[str, bool]:
    """Resume the newest unfinished run of this name, or start one; returns (run id, resumed).

    In a federation the name is ``<[run] name>.<cluster>``: each aggregator drives its own run."""
    name = config.federation.run_name(config.run.name)
    found = store.find_run(name, kind=RUN_KIND)
    if found is None or found.status == "finished":
        run_id = store.create_run(name, RUN_KIND, config.to_record(), config.run.seed)
        log.info("started run %s (%s)", name, run_id[:8])
        return run_id, False
    stored, now_settings = found.config or {}, config.to_dict()
    for table, key in FIXED_SETTINGS:
        if table == "async" and config.run.mode != "async":
            continue
        before, now = (stored.get(table) or {}).get(key), now_settings[table][key]
        if before is not None and before != now:
            raise ConfigError(
                f"run {name!r} was started with [{table}] {key} = {before!r}; it cannot resume with {now!r}"
                f" (set {key} back, or start a new run with another [run] name)"
            )
    store.reopen_run(found.id)
    log.info("resuming run %s (%s)", name, found.id[:8])
    return found.id, True


def fail_start(store: DeploymentStore, run_id: str, exc: Exception) -> None:
    """Mark the run ``failed`` with the reason when the start fails after the run was opened
    (e.g. read-only blobs), instead of leaving it ``running`` with no aggregator behind it."""
    reason = f"the aggregator failed to start: {type(exc).__name__}: {exc}"
    try:
        store.finish_run(run_id, "failed", {"error": reason})
    except StoreError:
        log.exception("could not mark run %s failed", run_id)
