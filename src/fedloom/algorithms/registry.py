"""Strategies by name: ``--strategy fedadam --server-lr 0.01`` becomes a composed Strategy.

A name picks the parts (aggregator, server optimiser, client terms); ``params`` sets
their parameters. ``aggregator`` and ``server_opt`` may also be named on their own to
combine parts, e.g. FedProx clients with a trimmed-mean aggregator and FedAdam. A
parameter that no chosen part uses is an error that says which parts would use it.

Client parts are looked up here too: a strategy names the client parts its clients run
in ``FitConfig.extra["client_parts"]`` (FedProx's term, the aggregator's part), and
:func:`client_parts` turns those wire names back into the parts, on any client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fedloom.algorithms import aggregators as agg
from fedloom.algorithms.dp.client import DpClient
from fedloom.algorithms.fedcurv import FedCurv, FedCurvClient
from fedloom.algorithms.feddyn import FedDyn, FedDynClient
from fedloom.algorithms.fedprox import PROXIMAL_MU, FedProxClient
from fedloom.algorithms.filtering import ModelFilter
from fedloom.algorithms.sampling import ClientSampler
from fedloom.algorithms.scaffold import Scaffold, ScaffoldClient
from fedloom.algorithms.server_opt import AdaptiveServerOpt, FedAvgM, ServerOptimizer
from fedloom.algorithms.strategy import Aggregator, ClientSettings, RoundCriteria, Strategy, WeightedMean
from fedloom.algorithms.units import CLIENT_PARTS_KEY, ClientPart, HasClientPart, SendsClientExtra
from fedloom.core.errors import ConfigError

_Params = dict[str, Any]

AGGREGATORS: dict[str, tuple[tuple[str, ...], Callable[[_Params], Aggregator]]] = {
    "mean": ((), lambda p: WeightedMean()),
    "median": ((), lambda p: agg.Median()),
    "trimmed_mean": (("trim_beta",), lambda p: agg.TrimmedMean(**p)),
    "geometric_median": (("max_iter",), lambda p: agg.GeometricMedian(**p)),
    "krum": (("byzantine_f",), lambda p: agg.Krum(**p)),
    "multikrum": (("byzantine_f", "multikrum_m"), lambda p: agg.MultiKrum(**p)),
    "bulyan": (("byzantine_f",), lambda p: agg.Bulyan(**p)),
    "norm_bounded": (("clip_norm",), lambda p: agg.NormBounded(**p)),
    "centered_clip": (("clip_norm", "clip_iterations"), lambda p: agg.CenteredClip(**p)),
    "fednova": ((), lambda p: agg.FedNova()),
    "qfedavg": (("q", "lr"), lambda p: agg.QFedAvg(**p)),
    "scaffold": ((), lambda p: Scaffold()),
    "fedcurv": (("curvature_lambda",), lambda p: FedCurv(**p)),
    "feddyn": (("feddyn_alpha",), lambda p: FedDyn(p.get("feddyn_alpha", 0.01))),
}

SERVER_OPTIMIZERS: dict[str, tuple[tuple[str, ...], Callable[[_Params], ServerOptimizer]]] = {
    "fedavgm": (("server_lr", "server_momentum"), lambda p: FedAvgM(**p)),
    "fedadam": (("server_lr", "beta1", "beta2", "tau"), lambda p: AdaptiveServerOpt(variant="fedadam", **p)),
    "fedyogi": (("server_lr", "beta1", "beta2", "tau"), lambda p: AdaptiveServerOpt(variant="fedyogi", **p)),
    "fedadagrad": (("server_lr", "beta1", "tau"), lambda p: AdaptiveServerOpt(variant="fedadagrad", **p)),
}

# strategy name -> (aggregator, server optimiser, client terms it turns on)
STRATEGIES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "fedavg": ("mean", None, ()),
    "fedprox": ("mean", None, ("proximal_mu",)),
    "fedavgm": ("mean", "fedavgm", ()),
    "fedadam": ("mean", "fedadam", ()),
    "fedyogi": ("mean", "fedyogi", ()),
    "fedadagrad": ("mean", "fedadagrad", ()),
    "fednova": ("fednova", None, ()),
    "qfedavg": ("qfedavg", None, ()),
    "scaffold": ("scaffold", None, ()),
    "fedcurv": ("fedcurv", None, ()),
    **{
        name: (name, None, ())
        for name in AGGREGATORS
        if name not in ("mean", "fednova", "qfedavg", "scaffold", "fedcurv")
    },
}

CLIENT_PARTS: dict[str, ClientPart] = {
    part.name: part for part in (FedProxClient(), ScaffoldClient(), FedCurvClient(), FedDynClient(), DpClient())
}

PERSONAL_PARAM = "personal_keys"
FILTER_PARAMS = ("filter_max_distance", "filter_min_cosine")
PARAM_TYPES: dict[str, type] = {
    "server_lr": float, "server_momentum": float, "beta1": float, "beta2": float, "tau": float,
    "proximal_mu": float, "trim_beta": float, "max_iter": int, "byzantine_f": int, "multikrum_m": int,
    "clip_norm": float, "clip_iterations": int, "q": float, "curvature_lambda": float,
    "feddyn_alpha": float,
    "filter_max_distance": float, "filter_min_cosine": float, "personal_keys": str,
}  # fmt: skip


def _take(params: _Params, names: tuple[str, ...]) -> _Params:
    return {k: params.pop(k) for k in names if k in params}


def _users_of(param: str) -> list[str]:
    parts = [f"aggregator {n}" for n, (keys, _) in AGGREGATORS.items() if param in keys]
    parts += [f"server_opt {n}" for n, (keys, _) in SERVER_OPTIMIZERS.items() if param in keys]
    return parts


def _coerce(params: Mapping[str, Any]) -> _Params:
    out: _Params = {}
    for key, value in params.items():
        if value is None:
            continue
        kind = PARAM_TYPES.get(key)
        if kind is None:
            raise ConfigError(f"unknown strategy parameter {key!r}; known: {', '.join(sorted(PARAM_TYPES))}")
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
                raise TypeError(value)
            out[key] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"strategy parameter {key} must be {kind.__name__}, got {value!r}") from None
    return out


def _refuse_unused(left: _Params, name: str) -> None:
    """A parameter no chosen part takes is an error naming the parts that would."""
    if left:
        key = sorted(left)[0]
        users = _users_of(key)
        raise ConfigError(
            f"strategy parameter {key!r} is not used by strategy {name!r}"
            + (f"; it belongs to {', '.join(users)}" if users else "")
        )


def _pick(name: str, table: Mapping[str, Any], what: str) -> Any:
    if name not in table:
        raise ConfigError(f"unknown {what} {name!r}; choose one of: {', '.join(sorted(table))}")
    return table[name]


def _client_extra(built_agg: Aggregator, prox: _Params, fedprox: bool) -> _Params:
    """The wire values every client gets: FedProx's μ (combines with any strategy), what the
    aggregator asks for, and the names of the client parts to run."""
    extra = dict(prox)
    if fedprox:
        extra.setdefault(PROXIMAL_MU, 0.01)
    parts = [FedProxClient().name] if PROXIMAL_MU in extra else []
    if isinstance(built_agg, SendsClientExtra):
        extra.update(built_agg.client_extra())
    if isinstance(built_agg, HasClientPart):
        parts.append(built_agg.client_part().name)
    if parts:
        extra[CLIENT_PARTS_KEY] = parts
    return extra


def client_parts(extra: Mapping[str, Any]) -> tuple[ClientPart, ...]:
    """The client parts a FitConfig's ``extra`` names (none when it names none).

    A name this fedloom does not know is refused: training without the part would send
    the server an update it cannot use.
    """
    names = extra.get(CLIENT_PARTS_KEY, [])
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{CLIENT_PARTS_KEY} must be a list of client-part names, got {names!r}")
    unknown = [n for n in names if n not in CLIENT_PARTS]
    if unknown:
        raise ConfigError(
            f"{CLIENT_PARTS_KEY} names {unknown[0]!r}, which this fedloom does not know "
            f"(known: {', '.join(sorted(CLIENT_PARTS))}); upgrade fedloom on this client"
        )
    return tuple(CLIENT_PARTS[n] for n in names)


def build_strategy(
    name: str = "fedavg",
    *,
    fraction: float = 0.1,
    min_clients: int = 1,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.01,
    criteria: RoundCriteria | None = None,
    aggregator: str | None = None,
    server_opt: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> Strategy:
    """The named strategy with ``params`` set; ``aggregator``/``server_opt`` override its parts."""
    default_agg, default_opt, client_terms = _pick(name, STRATEGIES, "strategy")
    left = _coerce(params or {})
    agg_name = aggregator or default_agg
    agg_keys, make_agg = _pick(agg_name, AGGREGATORS, "aggregator")
    agg_params = _take(left, tuple(k for k in agg_keys if k != "lr"))
    if "lr" in agg_keys:
        agg_params["lr"] = lr
    built_agg = make_agg(agg_params)
    opt_name = server_opt or default_opt
    built_opt = None
    if opt_name:
        opt_keys, make_opt = _pick(opt_name, SERVER_OPTIMIZERS, "server optimiser")
        built_opt = make_opt(_take(left, opt_keys))
    extra = _client_extra(built_agg, _take(left, (PROXIMAL_MU,)), PROXIMAL_MU in client_terms)
    personal = tuple(p.strip() for p in str(left.pop(PERSONAL_PARAM, "")).split(",") if p.strip())
    if personal:
        extra[PERSONAL_PARAM] = list(personal)
    bounds = _take(left, FILTER_PARAMS)
    model_filter = ModelFilter(bounds.get("filter_max_distance"), bounds.get("filter_min_cosine")) if bounds else None
    _refuse_unused(left, name)
    return Strategy(
        name=name,
        sampler=ClientSampler(fraction=fraction, min_clients=min_clients),
        aggregator=built_agg,
        client=ClientSettings(epochs=epochs, batch_size=batch_size, lr=lr, extra=extra),
        criteria=criteria or RoundCriteria(),
        server_opt=built_opt,
        update_filter=model_filter,
        personal_keys=personal,
    )
