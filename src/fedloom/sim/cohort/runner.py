"""What an executor calls: a round's clients trained as cohorts, with today's results and failures.

Each client goes through the same steps as ``fit_one``: its trainer is built by
``client_fn``, its personal tensors and client parts are prepared
(``prepare_fit``), it is trained, its parts' outcomes are stored (``finish_fit``), the
result is checked and passed through the run's compression. Only the training in the
middle is shared: eligible clients (see fedloom.sim.cohort.probe) with the same model,
optimiser settings and batch size are trained by one ``train_cohort`` call. A client
whose trainer or preparation raises is reported as a ClientFailure exactly as the
sequential executor reports it; a refused client, or a whole cohort whose batched
training raises, is trained one by one (so its own error, if any, is what is reported),
and the reason is logged once per process. Results come out in the round's order.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from fedloom.client.client_state import LocalContext, PreparedFit, finish_fit, prepare_fit
from fedloom.client.compressed_upload import as_received
from fedloom.client.fit_check import checked_fit_result
from fedloom.client.torch_trainer import TorchTrainer
from fedloom.client.trainer import Trainer
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.update import ClientUpdate
from fedloom.core.weights import Weights
from fedloom.sim.cohort.budget import auto_cohort_size
from fedloom.sim.cohort.probe import auto_refusal, cohort_refusal
from fedloom.sim.cohort.train import CohortJob, TrainerSettings, train_cohort
from fedloom.sim.executor import ClientFailure, ClientFn, fit_trainer

log = logging.getLogger("fedloom.sim.cohort")
_said: set[str] = set()

Outcome = ClientUpdate | ClientFailure
#: how a client that raised is reported: ``(client_id, round, exception) -> ClientFailure``
OnError = Callable[[str, int, BaseException], ClientFailure]


def say_once(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` the first time this process sees it (a fallback is explained once, not per client)."""
    if message not in _said:
        _said.add(message)
        log.log(level, message)


def refused(trainer: Trainer, config: FitConfig, setting: str | int) -> bool:
    """Whether this client trains one by one under ``setting`` (the reason logged once per process)."""
    reason = cohort_refusal(trainer, config)
    if reason is None and setting == "auto" and isinstance(trainer, TorchTrainer):
        reason = auto_refusal(trainer)
    if reason is not None:
        level = logging.INFO if setting == "auto" else logging.WARNING
        say_once(f"cohort training off for these clients, trained one by one: {reason}", level)
    return reason is not None


def round_takes_cohorts(client_fn: ClientFn, client_id: str, config: FitConfig, setting: str | int) -> bool:
    """Whether a round's first client may join a cohort: how a parallel executor decides to hand
    out shares (batched in the workers) or one client at a time (so a model that trains one by
    one keeps the one-at-a-time balancing). A client_fn that raises says yes: the workers report it."""
    try:
        return not refused(client_fn(int(client_id)), config, setting)
    except Exception:  # reported where it is trained, by the worker, as any failing client
        return True


def failure(client_id: str, round: int, exc: BaseException) -> ClientFailure:
    """The sequential executor's report of a client that raised."""
    return ClientFailure(client_id, round, f"{type(exc).__name__}: {exc}", traceback.format_exc())


@dataclass
class _Member:
    """An eligible client, prepared, waiting for its cohort."""

    client_id: str
    trainer: TorchTrainer
    config: FitConfig
    prepared: PreparedFit
    context: LocalContext


def _job(member: _Member) -> CohortJob:
    trainer, prepared = member.trainer, member.prepared
    return CohortJob(
        trainer.x, trainer.y, prepared.model, member.config, prepared.terms, trainer.loss_fn, trainer.class_weights
    )


class CohortRound:
    """One round: clients prepared in order, cohorts trained when full, results yielded in order.

    ``on_error`` reports a client that raised as the calling executor reports it (the
    sequential executor's :func:`failure` by default; a parallel worker passes its own)."""

    def __init__(
        self,
        round: int,
        weights: Weights,
        configs: Mapping[str, FitConfig],
        state_dir: str | None,
        size: str | int,
        on_error: OnError = failure,
    ) -> None:
        self.round, self.weights, self.configs, self.state_dir = round, weights, configs, state_dir
        self.on_error = on_error
        self.setting = size
        self.size = size if isinstance(size, int) else 0  # auto: sized by the first eligible client

    def run(self, client_fn: ClientFn) -> Iterator[Outcome]:
        order: list[str] = []
        done: dict[str, Outcome] = {}
        waiting: list[_Member] = []
        for client_id, config in self.configs.items():
            order.append(client_id)
            admitted = self._admit(client_fn, client_id, config)
            if isinstance(admitted, _Member):
                waiting.append(admitted)
            else:
                done[client_id] = admitted
            if waiting and len(waiting) >= self.size:
                done.update(self._train(waiting))
                waiting = []
                yield from (done.pop(c) for c in order)
                order = []
        done.update(self._train(waiting))
        yield from (done.pop(c) for c in order)

    def _admit(self, client_fn: ClientFn, client_id: str, config: FitConfig) -> _Member | Outcome:
        """Build and prepare the client; refused clients are trained on their own at once."""
        try:
            trainer = client_fn(int(client_id))
            if refused(trainer, config, self.setting):
                return self._alone(trainer, client_id, config)
            assert isinstance(trainer, TorchTrainer)
            context = LocalContext(client_id, self.state_dir)
            prepared = prepare_fit(self.weights, config, context)
        except Exception as exc:  # a user's client_fn or stored state may raise anything: reported
            return self.on_error(client_id, self.round, exc)
        if not self.size:
            self.size = auto_cohort_size(trainer.model, trainer.x[:1], config.batch_size, len(trainer.x))
        return _Member(client_id, trainer, config, prepared, context)

    def _alone(self, trainer: Trainer, client_id: str, config: FitConfig) -> Outcome:
        try:
            return fit_trainer(trainer, client_id, self.weights, config, self.state_dir)
        except Exception as exc:  # as the sequential executor: reported, never swallowed
            return self.on_error(client_id, self.round, exc)

    def _train(self, members: list[_Member]) -> dict[str, Outcome]:
        """Train ``members`` in cohorts of one model, optimiser and batch size each."""
        groups: dict[tuple[object, ...], list[_Member]] = {}
        for m in members:
            groups.setdefault((*TrainerSettings.of(m.trainer).key(), m.config.batch_size), []).append(m)
        out: dict[str, Outcome] = {}
        for group in groups.values():
            if len(group) == 1:
                out[group[0].client_id] = self._alone(group[0].trainer, group[0].client_id, group[0].config)
                continue
            try:
                jobs = [_job(m) for m in group]
                results = train_cohort(TrainerSettings.of(group[0].trainer), jobs)
            except Exception as exc:  # the batched path failed: each client trains (and fails) on its own
                say_once(f"cohort training failed ({type(exc).__name__}: {exc}); training those clients one by one")
                out.update({m.client_id: self._alone(m.trainer, m.client_id, m.config) for m in group})
                continue
            out.update({m.client_id: self._finish(m, r) for m, r in zip(group, results, strict=True)})
        return out

    def _finish(self, member: _Member, trained: FitResult) -> Outcome:
        """What ``fit_one`` does after ``trainer.fit``: parts' outcomes, checks, compression."""
        try:
            result = finish_fit(member.prepared, trained, member.context)
            result = checked_fit_result(result, member.config.round)
            result = as_received(result, self.weights, member.config, member.context)
        except Exception as exc:  # reported as the sequential executor reports it
            return self.on_error(member.client_id, self.round, exc)
        round_ = member.config.round
        return ClientUpdate(member.client_id, round_, result.weights, result.num_samples, dict(result.metrics))


def run_cohort_round(
    round: int,
    weights: Weights,
    configs: Mapping[str, FitConfig],
    client_fn: ClientFn,
    state_dir: str | None,
    size: str | int,
) -> Iterator[Outcome]:
    """The round's results, clients trained as cohorts of ``size`` (``"auto"``: sized to memory)."""
    yield from CohortRound(round, weights, configs, state_dir, size).run(client_fn)
