"""Local training with the state a client keeps between rounds: the one client-side function.

Both the simulation's ``fit_one`` and the deployed agent train through
:func:`fit_with_state`, so personal keys (FedPer/FedBN) and every algorithm's client part
(FedProx, SCAFFOLD, FedCurv, FedDyn, ...) behave the same in both. What it needs comes in
two separate types: the wire's :class:`~fedloom.core.fit.FitConfig` (JSON the server sent,
naming the client parts to run) and a :class:`LocalContext` (what this runtime adds in
process: the client id and the local state directory, never sent anywhere). State lives
in that directory (per-run folder in simulation, the agent's own directory in
deployment), one subdirectory per part, written atomically.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from fedloom.algorithms.dp_sgd_settings import dp_sgd_from_extra
from fedloom.algorithms.registry import client_parts
from fedloom.algorithms.units import ClientPart, ClientRound
from fedloom.client.dp_sgd import LedgerStore, accounted, dp_sgd_capable
from fedloom.client.personal import PersonalStore, keep_personal, personal_patterns, with_personal
from fedloom.client.trainer import Trainer
from fedloom.core.errors import ClientError
from fedloom.core.fit import FitConfig, FitResult
from fedloom.core.reserved import model_part, reserved_part
from fedloom.core.terms import REPORT_INITIAL_LOSS, ClientTerms
from fedloom.core.weights import Weights


@dataclass(frozen=True)
class LocalContext:
    """What a local runtime adds to a fit, in process: who this client is and where its state lives.

    ``state_dir`` is needed only when the strategy keeps client state (personal keys, or
    a client part that keeps state); None otherwise.
    """

    client_id: str
    state_dir: str | Path | None = None


def personal_store(state_dir: str | Path) -> PersonalStore:
    """Where personal tensors live under a client-state directory."""
    return PersonalStore(Path(state_dir) / "personal")


def part_store(state_dir: str | Path, part: ClientPart) -> PersonalStore:
    """Where a client part keeps its state under a client-state directory (one folder per part)."""
    return PersonalStore(Path(state_dir) / part.name)


def fit_with_state(trainer: Trainer, weights: Weights, config: FitConfig, context: LocalContext) -> FitResult:
    """``trainer.fit`` with this client's personal tensors and the client parts the config names;
    under DP-SGD, refused for a trainer that cannot do it, and reporting the client's ε so far."""
    dp_sgd = dp_sgd_from_extra(config.extra)
    if dp_sgd is None:
        return _fit_parts(trainer, weights, config, context)
    rate = dp_sgd_capable(trainer).dp_sgd_sample_rate(config.batch_size)
    if context.state_dir is None:
        raise ClientError("DP-SGD counts each client's steps in its state directory, but none was given")
    result = _fit_parts(trainer, weights, config, context)
    return accounted(result, dp_sgd, rate, LedgerStore(context.state_dir), context.client_id)


@dataclass(frozen=True)
class PreparedFit:
    """One client's fit before training: the model it starts from, the terms its parts add,
    and what :func:`finish_fit` needs afterwards. Split out so a cohort of clients can be
    trained together between the two halves (fedloom.sim.cohort) with the same semantics."""

    model: Weights
    terms: ClientTerms
    steps: list[tuple[ClientPart, ClientRound]]
    patterns: tuple[str, ...]
    personal: PersonalStore | None


def prepare_fit(weights: Weights, config: FitConfig, context: LocalContext) -> PreparedFit:
    """The first half of a plain (non-DP) fit: personal tensors loaded, every part's terms built."""
    patterns, parts = personal_patterns(config.extra), client_parts(config.extra)
    model = model_part(weights)
    if (patterns or any(p.keeps_state for p in parts)) and context.state_dir is None:
        raise ClientError("this strategy keeps client state, but no client state directory was given")
    personal = personal_store(context.state_dir) if patterns and context.state_dir is not None else None
    if personal is not None:
        model = with_personal(model, context.client_id, patterns, personal)
    steps = [(part, ClientRound(model, reserved_part(weights), _kept(part, context), config)) for part in parts]
    terms = ClientTerms(report_initial_loss=bool(config.extra.get(REPORT_INITIAL_LOSS, False)))
    for part, step in steps:
        terms = terms.plus(part.terms(step))
    return PreparedFit(model, terms, steps, patterns, personal)


def finish_fit(prepared: PreparedFit, result: FitResult, context: LocalContext) -> FitResult:
    """The second half: personal tensors kept, every part's outcome stored and sent."""
    if prepared.personal is not None and isinstance(result, FitResult):
        keep_personal(result.weights, context.client_id, prepared.patterns, prepared.personal)
    if not prepared.steps:
        return result  # checked by the caller (fit_one, the agent), as a plain fit's result is
    if not isinstance(result, FitResult):
        raise ClientError(f"Trainer.fit must return a FitResult, got {type(result).__name__}")
    sent: Weights = {}
    for part, step in prepared.steps:
        outcome = part.outcome(step, result)
        if part.keeps_state and context.state_dir is not None:
            part_store(context.state_dir, part).save(context.client_id, outcome.kept)
        sent |= outcome.sent
    return FitResult({**model_part(result.weights), **sent}, result.num_samples, result.metrics)


def _fit_parts(trainer: Trainer, weights: Weights, config: FitConfig, context: LocalContext) -> FitResult:
    prepared = prepare_fit(weights, config, context)
    return finish_fit(prepared, _train(trainer, prepared.model, config, prepared.terms), context)


def _kept(part: ClientPart, context: LocalContext) -> Weights:
    if not part.keeps_state or context.state_dir is None:
        return {}
    return part_store(context.state_dir, part).load(context.client_id)


def _train(trainer: Trainer, model: Weights, config: FitConfig, terms: ClientTerms) -> FitResult:
    """``trainer.fit(model, config)``, or with ``terms`` when there are any; a trainer whose fit
    takes no terms is told so, and what to add, instead of training without them."""
    if not terms:
        result = trainer.fit(model, config)
    else:
        _check_takes_terms(trainer, model, config, terms)
        result = trainer.fit(model, config, terms)
    return result


def _check_takes_terms(trainer: Trainer, model: Weights, config: FitConfig, terms: ClientTerms) -> None:
    try:
        inspect.signature(trainer.fit).bind(model, config, terms)
    except TypeError:
        raise ClientError(
            f"this strategy adds client-side terms, but {type(trainer).__name__}.fit(weights, config) takes no "
            "third argument: define fit(self, weights, config, terms=NO_TERMS) and add "
            "terms.gradient(name, value) to each parameter's gradient (fedloom.core.terms; docs/algorithms.md)"
        ) from None
    except ValueError:  # no introspectable signature (a C callable): just call it
        pass
