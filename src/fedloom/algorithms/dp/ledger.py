"""The privacy ledger of one run: what every closed round released, and the ε it adds up to.

User-level DP over rounds that each draw m of the K registered clients without replacement
(fedloom's ``ClientSampler``): each round is one ``WithoutReplacement(K, m)`` step of the
Gaussian mechanism, composed by the accountant (:mod:`fedloom.algorithms.privacy_accountant`).

**Which multiplier is accounted.** The accountant's multiplier is the noise standard
deviation over the L2 sensitivity of what is noised. Under replace-one neighbours (the only
relation sampling without replacement has) one client's clipped update can change from
``a`` to ``b`` with ``‖a − b‖ ≤ 2C``, so the sum's sensitivity is 2C and noise z·C is
accounted as multiplier ``z/2``. With adaptive clipping, the update noise z_Δ and the count
noise σ_b compose to exactly the same ``z/2`` (their sensitivities are 2C and 1), so the
nominal z is what is accounted. In client mode a round where only n of the m selected
clients delivered carries only n noise shares: it is accounted at ``(z/2)·√(n/m)``.

**Local DP**: each client's own release is a Gaussian without sampling; a client's ε is the
composition over the rounds it took part in, and the run reports the worst client.

**Restart.** A ledger restarted at round r (an aggregator restarted from its store) does not
know how earlier rounds sampled; it counts each of them as a release of every client
without sampling amplification, an upper bound of what they spent.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from fedloom.algorithms.dp.settings import PrivacySettings
from fedloom.algorithms.privacy_accountant import Step, WithoutReplacement, composed_epsilon


@dataclass
class PrivacyLedger:
    """Rounds released so far (mutable; one per run, reset by :meth:`begin_run`)."""

    settings: PrivacySettings
    steps: list[Step] = field(default_factory=list)
    participation: Counter[str] = field(default_factory=Counter)
    unsampled_rounds: int = 0
    clip_norm: float = 0.0
    #: the number of clients the open round selected (its noise shares in client mode), set when it starts
    round_size: int = 0

    def __post_init__(self) -> None:
        self.begin_run(0)

    @property
    def multiplier(self) -> float:
        """The accounted multiplier of a full round: z/2 (sensitivity 2C under replace-one)."""
        assert self.settings.noise_multiplier is not None
        return float(self.settings.noise_multiplier) / 2.0

    def begin_run(self, rounds_done: int) -> None:
        """Start (or restart after ``rounds_done`` rounds, counted without sampling) a run."""
        assert self.settings.clip_norm is not None
        self.steps, self.participation = [], Counter()
        self.unsampled_rounds = rounds_done
        self.clip_norm = float(self.settings.clip_norm)

    def _prior(self) -> list[Step]:
        return [(self.multiplier, WithoutReplacement(1, 1), self.unsampled_rounds)] if self.unsampled_rounds else []

    def record(self, population: int, selected: int, delivered: Iterable[str]) -> None:
        """One closed round: ``selected`` of ``population`` drawn, ``delivered`` the clients that sent."""
        senders = list(delivered)
        multiplier = self.multiplier
        if self.settings.mode == "client":
            multiplier *= math.sqrt(len(senders) / selected)
        self.steps.append((multiplier, WithoutReplacement(population, selected), 1))
        self.participation.update(senders)

    def epsilon(self, extra: Step | None = None) -> float:
        """ε so far (with ``extra`` composed on top: what one more round would make it)."""
        assert self.settings.delta is not None
        delta, accountant = float(self.settings.delta), self.settings.accountant
        if self.settings.mode == "local":
            worst = max(self.participation.values(), default=0) + (1 if extra is not None else 0)
            rounds = worst + self.unsampled_rounds
            return composed_epsilon([(self.multiplier, WithoutReplacement(1, 1), rounds)], delta, accountant=accountant)
        steps = self._prior() + self.steps + ([extra] if extra is not None else [])
        return composed_epsilon(steps, delta, accountant=accountant)

    def epsilon_without_sampling(self) -> float:
        """ε if who took part were known (the store records each round's selection, and the run's
        seed decides it): every round as an unsampled Gaussian, no amplification by sampling."""
        assert self.settings.delta is not None
        unsampled = WithoutReplacement(1, 1)
        steps = [(m, unsampled, n) for m, _, n in self._prior() + self.steps]
        return composed_epsilon(steps, float(self.settings.delta), accountant=self.settings.accountant)

    def epsilon_after_next(self, population: int, selected: int) -> float:
        """ε if one more full round of ``selected`` of ``population`` were released."""
        return self.epsilon((self.multiplier, WithoutReplacement(population, selected), 1))
