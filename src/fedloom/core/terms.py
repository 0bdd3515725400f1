"""Client-side terms: the one hook through which an algorithm changes a client's local training.

FedProx, SCAFFOLD, FedCurv and FedDyn each add to the gradient of every parameter θ a
term that is affine in θ: ``scale ⊙ θ + offset`` (FedProx ``μθ − μθ_global``, SCAFFOLD
``c − c_i``, FedCurv ``2λ(aθ − b)``, FedDyn ``αθ − αθ_global − g_i``). An algorithm's
client part builds a :class:`ClientTerms` per fit; a Trainer applies it with one rule
(:meth:`ClientTerms.gradient`, or :meth:`ClientTerms.term` to precompute tensors once)
and so works with every such algorithm without knowing any of them. Terms of several
parts add up (:meth:`ClientTerms.plus`). The object lives in core because both sides
use it: the algorithms build it, the trainers read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: a trainer asked to ``report_fisher`` returns each parameter's diagonal Fisher under this prefix
FISHER_PREFIX = "fedloom.fisher/"
#: the wire flag (``FitConfig.extra``) by which a strategy asks for the metric ``initial_loss``
REPORT_INITIAL_LOSS = "report_initial_loss"


@dataclass(frozen=True)
class AffineTerm:
    """The extra gradient ``scale ⊙ θ + offset`` of one parameter (both broadcast to θ's shape).

    Its penalty is ``½ scale ⊙ θ² + offset ⊙ θ`` summed over the tensor (up to a constant).
    """

    scale: np.ndarray | float = 0.0
    offset: np.ndarray | float = 0.0

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """The term's gradient at ``theta``, always an array of ``theta``'s shape (0-d included)."""
        return np.asarray(self.scale * theta + self.offset, dtype=np.result_type(theta, np.float32))

    def plus(self, other: AffineTerm) -> AffineTerm:
        return AffineTerm(_add(self.scale, other.scale), _add(self.offset, other.offset))


def _add(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray | float:
    if isinstance(a, float) and isinstance(b, float):
        return a + b
    return np.asarray(np.asarray(a, np.float64) + np.asarray(b, np.float64))


@dataclass(frozen=True)
class ClientTerms:
    """What a Trainer receives with each fit, beside the wire's FitConfig.

    ``terms``: the extra gradient of each named parameter (a name that is absent gets
    none). ``report_fisher``: return each parameter's diagonal empirical Fisher (mean
    squared mini-batch gradient at the trained weights) in the result's weights under
    :data:`FISHER_PREFIX`. ``report_initial_loss``: report the loaded model's loss on the
    local data before training as metric ``initial_loss``.
    """

    terms: Mapping[str, AffineTerm] = field(default_factory=dict)
    report_fisher: bool = False
    report_initial_loss: bool = False

    def term(self, name: str) -> AffineTerm | None:
        """The affine term of parameter ``name`` (None: nothing to add)."""
        return self.terms.get(name)

    def gradient(self, name: str, theta: np.ndarray) -> np.ndarray | None:
        """The extra gradient of parameter ``name`` at value ``theta`` (None: nothing to add)."""
        term = self.terms.get(name)
        return None if term is None else term.gradient(theta)

    def plus(self, other: ClientTerms) -> ClientTerms:
        """Both sets of terms applied together (gradients add; a report asked by either is made)."""
        merged = dict(self.terms)
        for name, term in other.terms.items():
            merged[name] = merged[name].plus(term) if name in merged else term
        return ClientTerms(
            merged,
            self.report_fisher or other.report_fisher,
            self.report_initial_loss or other.report_initial_loss,
        )

    def __bool__(self) -> bool:
        return bool(self.terms) or self.report_fisher or self.report_initial_loss


NO_TERMS = ClientTerms()
