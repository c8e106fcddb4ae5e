"""L-GRR: memoized generalized randomized response (SPEC §7)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privfreq.protocols.base import ReportBatch, SupportCounting, register_protocol, set_fields
from privfreq.protocols.grr import ValueReport, grr_draw
from privfreq.protocols.longitudinal import Longitudinal, TwoRoundFields, grr_rounds
from privfreq.protocols.wire import IndexHistogram

__all__ = ["LGRR", "grr_draw"]


@register_protocol("lgrr")
@dataclass(frozen=True)
class LGRR(ValueReport, IndexHistogram, TwoRoundFields, Longitudinal, SupportCounting):
    """Longitudinal GRR (Arcolezi et al. 2022; SPEC §7). Memo key = the value.

    Distribution: permanent ``B′ = GRR_k(v)`` at ε∞ (``p1 = e^ε∞/(e^ε∞+k−1)``, ``q1 =
    (1−p1)/(k−1)``), memoized per (user, value); every report ``y = GRR(B′)`` with ``(p2, q2)``
    from ``longitudinal.grr_second_round``: ``exact`` makes the composite exactly GRR_k(ε1);
    ``paper`` is the published formula (over-randomizes for k > 2; its true one-report ε is
    ``real_epsilon``).
    Estimator: ``f̂ = (C/n − q*)/(p* − q*)`` with ``p* = p1p2+(1−p1)q2``, ``q* = q1p2+(1−q1)q2``
    (= SPEC's ``(C/n − q1(p2−q2) − q2)/((p1−q1)(p2−q2))``).
    Variance: ``[q*(1−q*) + f (p*−q*)(1−p*−q*)]/(n (p*−q*)²)``; ``exact`` at f = 0:
    ``(e^ε1+k−2)/(n (e^ε1−1)²)``. Budget: ε∞ per distinct value, cap ``k·ε∞``.
    Payload: ``y`` as one index (as GRR). Attack: the reported value; ASR ``p*`` (exact).
    """

    display_name = "L-GRR"
    asr_kind = "exact"

    def __post_init__(self):
        eps_perm, eps1 = self.check_budgets()
        p1, q1, p2, q2 = grr_rounds(eps_perm, eps1, self.k, self.calibration)
        p, _ = self.set_rounds(p1, q1, p2, q2)
        set_fields(self, real_epsilon=math.log(p / ((1 - p) / (self.k - 1))),
                   real_epsilon_perm=math.log(p1 / q1))

    @property
    def memo_key_count(self):
        return self.k

    def permanent(self, keys, public, rng):
        return grr_draw(np.asarray(keys, np.int64), self.k, self.p1, rng)[:, None]

    def instantaneous(self, memo, public, rng):
        b = memo[:, 0]
        n = len(b)
        # GRR with p2: q2 = (1 − p2)/(k − 1) under both calibrations
        y = grr_draw(b, self.k, self.p2, rng)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), y[:, None])

    def permanent_distribution(self, item):
        """Exact ``P(B′ | item)`` (round 1, ε∞)."""
        return {(b,): (self.p1 if b == item else self.q1) for b in range(self.k)}

    def output_distribution(self, item):
        """Exact ``P(y | item)`` of one report (the composite channel, ε1)."""
        q_other = (1 - self.p) / (self.k - 1)
        return {y: (self.p if y == item else q_other) for y in range(self.k)}
