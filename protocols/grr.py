"""Generalized randomized response (k-RR), the simplest baseline."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privfreq.protocols.base import PureSupport, ReportBatch, register_protocol
from privfreq.protocols.wire import IndexHistogram

__all__ = ["GRR", "ValueReport", "grr_draw"]


def grr_draw(x: np.ndarray, m: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """GRR on ``[m]``: ``x`` w.p. ``p``, else a uniform other value (int64, vectorized)."""
    n = len(x)
    keep = rng.random(n) < p
    other = rng.integers(0, m - 1, n)
    other += other >= x
    return np.where(keep, x, other)


class ValueReport:
    """Mixin of the protocols whose report is one value of ``[k]`` (GRR, L-GRR): the attacker
    guesses the reported value, with success rate ``p``."""

    @property
    def output_size(self):
        return self.k

    def information_bits(self):
        return math.ceil(math.log2(self.k))

    def attack(self, batch, rng):
        return batch.values[:, 0].astype(np.int64, copy=True)

    def closed_form_asr(self, f=None):
        return float(self.p)


@register_protocol("grr")
@dataclass(frozen=True)
class GRR(ValueReport, IndexHistogram, PureSupport):
    """k-ary randomized response (Warner 1965; Kairouz, Bonawitz, Ramage 2016).

    Distribution: report ``y = x`` w.p. ``p = e^ε/(e^ε+k−1)``, else a uniform other value, each
    w.p. ``q = 1/(e^ε+k−1)``. Estimator: ``f̂_x = (C_x/n − q)/(p − q)`` with ``C_x`` the reports
    equal to ``x``. Variance at ``f_x = 0``: ``(e^ε+k−2)/(n (e^ε−1)²)``.
    Payload: ``y`` as one little-endian index (``wire.index_width(k)`` bytes).
    Attack: guess the reported value; ASR ``p = e^ε/(e^ε+k−1)`` (exact).
    """

    display_name = "GRR"
    asr_kind = "exact"

    def __post_init__(self):
        e = math.exp(self.check_k_epsilon())
        self.set_support(e / (e + self.k - 1), 1.0 / (e + self.k - 1))

    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        y = grr_draw(x, self.k, self.p, rng)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), y[:, None])

    def output_distribution(self, item):
        return {y: (self.p if y == item else self.q) for y in range(self.k)}
