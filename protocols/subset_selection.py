"""Subset Selection (SS) on a domain of size m: its constants and wire format, and SS on [k].

Ye & Barg 2018; Wang et al. 2016. ``P(Z | r) ∝ e^{ε·[r∈Z]}`` over ω-subsets Z of [m].
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.base import (Counts, PureSupport, ReportBatch, register_protocol,
                                     set_fields)
from privfreq.protocols.ss_sampler import sample_subsets
from privfreq.protocols.wire import (decode_bitmap, decode_indices, encode_bitmap, encode_indices,
                            index_width, subset_encoding)

__all__ = ["SubsetSelection", "SSConstants", "decode_subsets", "encode_subsets", "ss_constants",
           "subset_distribution"]


@dataclass(frozen=True)
class SSConstants:
    """Derived constants of SS on ``[m]`` at budget ε (SPEC §1)."""

    m: int
    omega: int
    p: float   # P(r ∈ Z | r)
    q: float   # P(r' ∈ Z | r), r' ≠ r

    @property
    def variance_n1(self) -> float:
        """``q(1−q)/(p−q)²``: n·Var of the debiased count at g = 0."""
        return self.q * (1 - self.q) / (self.p - self.q) ** 2

    @property
    def information_bits(self) -> int:
        """``⌈log2 C(m, ω)⌉``."""
        return math.ceil(math.log2(math.comb(self.m, self.omega))) if self.m > 1 else 0

    @property
    def encoding(self) -> str:
        return subset_encoding(self.m, self.omega)

    @property
    def payload_width(self) -> int:
        if self.encoding == "indices":
            return self.omega * index_width(self.m)
        return (self.m + 7) // 8


def ss_constants(m: int, epsilon: float, omega: int | None = None) -> SSConstants:
    """ω = max(1, rint(m/(e^ε+1))) unless given (ASS, SPEC §10: any ω in [1, m−1]),
    p = ωe^ε/(ωe^ε+m−ω), q as in SPEC §1."""
    e = math.exp(epsilon)
    if omega is None:
        omega = max(1, int(np.rint(m / (e + 1))))
    denom = omega * e + m - omega
    p = omega * e / denom
    q = (omega * e * (omega - 1) + (m - omega) * omega) / ((m - 1) * denom)
    return SSConstants(m, omega, p, q)


def subset_distribution(c: SSConstants, r: int) -> dict[tuple[int, ...], float]:
    """Exact ``P(Z | r)`` over all ω-subsets of ``[m]`` (small m only)."""
    subsets = list(itertools.combinations(range(c.m), c.omega))
    with_r = math.comb(c.m - 1, c.omega - 1)
    without_r = math.comb(c.m - 1, c.omega)
    out = {}
    for z in subsets:
        out[z] = c.p / with_r if r in z else (1 - c.p) / without_r
    return out


def encode_subsets(values: np.ndarray, c: SSConstants) -> np.ndarray:
    """Subsets (entries < 0 are padding) → fixed-width payloads of ``c.payload_width`` bytes."""
    if c.encoding == "indices":
        return encode_indices(values[:, :c.omega], c.m)
    return encode_bitmap(values, c.m)


def decode_subsets(raw: np.ndarray, c: SSConstants,
                   pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Payloads → (sorted ``int64[n, ω]`` subsets, reason per row); ``pad_to`` (>= ω): rows of
    that width, -1 after the subset (bitmaps are decoded straight into them, no copy)."""
    if c.encoding == "bitmap":
        return decode_bitmap(raw, c.m, c.omega, pad_to)
    z, reason = decode_indices(raw, c.m, c.omega, distinct=True)
    if pad_to is None or pad_to == c.omega:
        return z, reason
    values = np.full((len(z), pad_to), -1, dtype=np.int64)
    values[:, :c.omega] = z
    return values, reason


@register_protocol("ss")
@dataclass(frozen=True)
class SubsetSelection(PureSupport):
    """Subset Selection on ``[k]`` (Wang et al. 2016; Ye & Barg 2018).

    Distribution: ``P(Z | x) ∝ e^{ε·[x∈Z]}`` over ω-subsets of [k], ``ω = max(1, rint(k/(e^ε+1)))``.
    Estimator: ``f̂_x = (C_x/n − q)/(p − q)``, ``C_x`` = reports whose subset contains x.
    Variance at ``f_x = 0``: ``q(1−q)/(n(p−q)²)``. Payload: the subset, as sorted indices or as a
    k-bit bitmap, whichever is shorter.
    Attack: a uniform member of Z; ASR ``p/ω = e^ε/(ω e^ε + k − ω)`` (exact).
    """

    display_name = "SS"
    asr_kind = "exact"
    ss: SSConstants = field(init=False, repr=False)

    def __post_init__(self):
        ss = ss_constants(self.k, self.check_k_epsilon("SubsetSelection"))
        set_fields(self, ss=ss)
        self.set_support(ss.p, ss.q)

    @property
    def values_width(self):
        return self.ss.omega

    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64),
                           sample_subsets(x, self.ss, rng))

    def payload_width(self, block):
        return self.ss.payload_width

    def encode_payloads(self, block, values):
        return encode_subsets(values, self.ss)

    def decode_payloads(self, block, raw):
        return decode_subsets(raw, self.ss)

    def information_bits(self):
        return self.ss.information_bits

    def count_shape(self):
        return (self.k,)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        acc.counts += np.bincount(batch.values.ravel(), minlength=self.k)
        acc.n_block[0] += len(batch)
        return acc

    def attack(self, batch, rng):
        n = len(batch)
        col = rng.integers(0, batch.values.shape[1], n)
        return batch.values[np.arange(n), col].astype(np.int64)

    def closed_form_asr(self, f=None):
        return self.p / self.ss.omega

    def output_distribution(self, item):
        return subset_distribution(self.ss, item)
