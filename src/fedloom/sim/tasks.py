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

from fedloom.client.numpy_logreg import NumpyLogisticTrainer
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ConfigError
from fedloom.core.fit import EvalConfig
from fedloom.core.rng import rng_for
from fedloom.core.weights import Weights
from fedloom.data import ArrayDataset, DatasetSplits, load_dataset
from fedloom.sim.adversary import flip_labels
from fedloom.sim.config import SimConfig, config_from_mapping
from fedloom.sim.driver import simulate
from fedloom.sim.executor import Executor, SequentialExecutor
from fedloom.sim.history import SimulationResult
from fedloom.sim.options import Environment, Evaluation, Recording
from fedloom.sim.partition import partition
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


def _torch_factory(config: SimConfig, train: ArrayDataset) -> Callable[[ArrayDataset, ArrayDataset | None], Trainer]:
    import torch

    from fedloom.client.torch_trainer import TorchTrainer
    from fedloom.models import build_model

    torch.manual_seed(config.seed)
    model = build_model(config.model, tuple(train.x.shape[1:]), train.num_classes)

    def make(data: ArrayDataset, evaluation: ArrayDataset | None) -> Trainer:
        extra: dict[str, Any] = {}
        if evaluation is not None:
            extra = {"x_eval": evaluation.x, "y_eval": evaluation.y}
        return TorchTrainer(model, data.x, data.y, device=config.device, **extra)

    return make


def _numpy_factory(config: SimConfig, train: ArrayDataset) -> Callable[[ArrayDataset, ArrayDataset | None], Trainer]:
    def make(data: ArrayDataset, evaluation: ArrayDataset | None) -> Trainer:
        extra: dict[str, Any] = {}
        if evaluation is not None:
            extra = {"x_eval": evaluation.x, "y_eval": evaluation.y}
        return NumpyLogisticTrainer(data.x, data.y, train.num_classes, **extra)

    return make


def _held_out(size: int, fraction: float) -> int:
    """How many of a client's samples are kept back for its local test set (at least one trains)."""
    return min(size - 1, round(fraction * size)) if fraction > 0 else 0


def _local_split(indices: np.ndarray, fraction: float, seed: int, client: int) -> tuple[np.ndarray, np.ndarray]:
    """A client's (train, local test) indices: a seeded ``fraction`` held out for client evaluation."""
    held = _held_out(len(indices), fraction)
    if held == 0:
        return indices, indices[:0]
    order = rng_for(seed, "local-test", client).permutation(len(indices))
    return indices[np.sort(order[held:])], indices[np.sort(order[:held])]


def build_task(config: SimConfig) -> SimTask:
    """Load the dataset, partition it, and make the client factory and the central evaluator."""
    data = load_dataset(config.dataset, config.data_dir, compact=True)
    parts = partition(
        config.partition,
        data.train.y,
        config.clients,
        config.seed,
        alpha=config.alpha,
        classes_per_client=config.classes_per_client,
    )
    factory = _numpy_factory if config.model == "logreg" else _torch_factory
    make = factory(config, data.train)
    adversary = config.adversary()
    flipped = adversary.malicious(config.clients, config.seed) if adversary.kind == "label_flip" else frozenset()

    def client_fn(index: int) -> Trainer:
        train_idx, test_idx = _local_split(parts[index], config.local_test_fraction, config.seed, index)
        local = data.train.subset(train_idx)
        if index in flipped:
            local = ArrayDataset(local.x, flip_labels(local.y, local.num_classes), local.num_classes)
        return make(local, data.train.subset(test_idx).materialised() if len(test_idx) else None)

    evaluator = make(data.train.subset(parts[0]), data.test.materialised())

    def evaluate_fn(weights: Weights) -> Mapping[str, float]:
        metrics = evaluator.evaluate(weights, EvalConfig())
        return {k: v for k, v in metrics.items() if k != "num_samples"}

    return SimTask(
        client_fn=client_fn,
        evaluate_fn=evaluate_fn,
        initial_weights=evaluator.get_weights(),
        client_sizes=[len(p) - _held_out(len(p), config.local_test_fraction) for p in parts],
        partitions=parts,
        data=data,
    )


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
            run_name=config.name or f"{config.dataset}-{config.model}-{config.partition}",
            config=config.to_dict(),
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
