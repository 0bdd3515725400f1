"""Built-in tasks: a SimConfig becomes a dataset, a partition, trainers and a central evaluator.

Trainers are built on demand from a client's index list, so idle clients cost only
their indices; for PyTorch models one module per process is reused across clients
(the weights are loaded into it at the start of every fit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.client.trainer import Trainer
from fedloom.core.errors import ConfigError
from fedloom.core.fit import EvalConfig
from fedloom.core.weights import Weights
from fedloom.data import ArrayDataset, DatasetSplits
from fedloom.sim.adversary import flip_labels
from fedloom.sim.builtin_trainer import TrainerMaker, trainer_maker_for
from fedloom.sim.config import SimConfig, config_from_mapping
from fedloom.sim.driver import simulate
from fedloom.sim.executor import Executor, SequentialExecutor
from fedloom.sim.history import SimulationResult
from fedloom.sim.options import Environment, Evaluation, Recording
from fedloom.sim.partition import partition
from fedloom.sim.partition_split import held_out_count, split_client
from fedloom.sim.task_data import load_task_data, with_natural_clients
from fedloom.tracking.settings import TrackingSettings


@dataclass(frozen=True)
class SimTask:
    """Everything the driver needs, derived from a SimConfig."""

    client_fn: Callable[[int], Trainer]
    evaluate_fn: Callable[[Weights], Mapping[str, float]]
    initial_weights: Weights
    client_sizes: list[int]
    partitions: list[np.ndarray]
    data: DatasetSplits
    #: the settings the task was built for (``--partition natural``: one client per group)
    config: SimConfig
    #: the local dataset's description and fitted preprocessing, recorded with the run; empty for a built-in one
    description: dict[str, Any]


def build_task(config: SimConfig) -> SimTask:
    """Load the dataset, partition it, and make the client factory and the central evaluator.

    The model's input shape and class count come from the data loaded, so a local table
    of any width trains the same built-in models as the named datasets.
    """
    loaded = load_task_data(config)
    config = with_natural_clients(config, loaded)
    data = loaded.splits
    parts = partition(
        config.partition,
        data.train.y,
        config.clients,
        config.seed,
        alpha=config.alpha,
        classes_per_client=config.classes_per_client,
        **config.partition_options(features=data.train.x, groups=loaded.groups),
    )
    make = trainer_maker_for(config, data.input_shape, data.num_classes)
    evaluator = make(data.train.subset(parts[0]), data.test.materialised())

    def evaluate_fn(weights: Weights) -> Mapping[str, float]:
        metrics = evaluator.evaluate(weights, EvalConfig())
        return {k: v for k, v in metrics.items() if k != "num_samples"}

    return SimTask(
        client_fn=_client_fn(config, data.train, parts, make),
        evaluate_fn=evaluate_fn,
        initial_weights=evaluator.get_weights(),
        client_sizes=[len(p) - held_out_count(len(p), config.local_test_fraction) for p in parts],
        partitions=parts,
        data=data,
        config=config,
        description=loaded.description,
    )


def _client_fn(
    config: SimConfig, train: ArrayDataset, parts: list[np.ndarray], make: TrainerMaker
) -> Callable[[int], Trainer]:
    """Client ``index``'s trainer on its partition (less its local test share), labels flipped if malicious."""
    adversary = config.adversary()
    flipped = adversary.malicious(config.clients, config.seed) if adversary.kind == "label_flip" else frozenset()

    def client_fn(index: int) -> Trainer:
        train_idx, test_idx = split_client(parts[index], config.local_test_fraction, config.seed, index)
        local = train.subset(train_idx)
        if index in flipped:
            local = ArrayDataset(local.x, flip_labels(local.y, local.num_classes), local.num_classes)
        return make(local, train.subset(test_idx).materialised() if len(test_idx) else None)

    return client_fn


def make_executor(config: SimConfig) -> Executor:
    """The executor a SimConfig asks for."""
    if config.executor == "parallel":
        from fedloom.sim.parallel import ParallelExecutor

        # each worker trains its share of a round as cohorts where the model is safe (issue 13)
        return ParallelExecutor(config.workers or None, max_retries=config.max_retries, cohort=config.cohort)
    if config.executor == "ray":
        from fedloom.sim.ray_executor import RayExecutor

        resources = config.ray_resources()
        return RayExecutor(
            config.ray_address,
            resources=resources,
            num_cpus=config.ray_cpus or None,
            max_retries=config.ray_retries,
            cohort=config.cohort,  # each actor trains its share of a round as cohorts where the model is safe
        )
    return SequentialExecutor(cohort=config.cohort)  # cohort training where the model is safe (issue 13)


def simulate_config(
    config: SimConfig,
    *,
    store: Any = None,
    resume: str | None = None,
    tracking: TrackingSettings | None = None,
    **overrides: Any,
) -> SimulationResult:
    """Run a built-in simulation exactly as ``fedloom sim`` would for ``config``.

    Every setting of the config reaches :func:`fedloom.simulate` (strategy, executor,
    attack, client speeds, deadline, client evaluation); ``overrides`` replace any of
    its keyword arguments (e.g. ``observers=[ProgressPrinter(rounds)]``); ``resume`` names
    an interrupted run of ``store`` to continue (:func:`resume_config` reads its config). ``store=None``
    records nothing; ``tracking`` feeds the sinks it names (``fedloom sim --track``).
    """
    task = build_task(config)
    config = task.config  # --partition natural: the client count is the data's
    recorded = {**config.to_dict(), **({"data_description": task.description} if task.description else {})}
    kwargs: dict[str, Any] = {
        "seed": config.seed,
        "initial_weights": task.initial_weights,
        "environment": Environment(
            client_sizes=task.client_sizes,
            speeds=config.client_speeds(),
            deadline_seconds=config.deadline_seconds or None,
            on_deadline=config.on_deadline,  # type: ignore[arg-type]  # checked by SimConfig
            adversary=config.adversary(),
            asynchronous=config.asynchronous(),
            concurrency=config.concurrency,
            on_client_error=config.on_client_error,  # type: ignore[arg-type]  # checked by SimConfig
            secagg_dropout={k: float(v) for k, v in config.secagg_dropout.items()} or None,
        ),
        "secure": config.secure(),
        "evaluation": Evaluation(task.evaluate_fn, config.client_eval_fraction, config.finetune_epochs),
        "recording": Recording(
            store=store,
            run_name=config.name or f"{_short_name(config)}-{config.model}-{config.partition}",
            config=recorded,
            keep_local_models=config.keep_local_models,
            resume=resume,
            tracking=tracking,
        ),
        "executor": make_executor(config),
        "observers": [],
        "privacy": config.privacy_settings(),
        **overrides,
    }
    return simulate(task.client_fn, config.clients, config.build_strategy(), config.rounds, **kwargs)


def _short_name(config: SimConfig) -> str:
    """``digits``, or a local dataset's file name without its folders (``hospital.csv``)."""
    if not config.data:
        return config.dataset_name()
    return str(config.data.get("path", "data")).rstrip("/").rsplit("/", 1)[-1]


def resume_config(store: Any, run_id: str) -> SimConfig:
    """The settings an interrupted ``fedloom sim`` run was started with (to continue it exactly)."""
    stored = dict(store.get_run(run_id).config or {})
    known = {name: stored[name] for name in SimConfig.__dataclass_fields__ if name in stored}
    if isinstance(known.get("strategy"), dict):  # the run records the strategy's full description
        known["strategy"] = known["strategy"].get("name")
    if "dataset" not in known:
        raise ConfigError(
            f"run {run_id} was not started by `fedloom sim`; resume it from Python with the same"
            " client_fn and strategy: simulate(..., recording=Recording(store=..., resume=RUN_ID))"
        )
    return config_from_mapping(known)
