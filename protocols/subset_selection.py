"""Subset Selection (SS) on a domain of size m: the sampler, its constants, and SS on [k].

Ye & Barg 2018; Wang et al. 2016. ``P(Z | r) ∝ e^{ε·[r∈Z]}`` over ω-subsets Z of [m].
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from protocols.base import (Counts, Estimate, FrequencyProtocol, ReportBatch, check_epsilon,
                            check_int, register_protocol)
from protocols.estimators import debias, pure_variance
from protocols.wire import (decode_bitmap, decode_indices, encode_bitmap, encode_indices,
                            index_width, subset_encoding)

__all__ = ["SubsetSelection", "SSConstants", "sample_subsets", "ss_constants"]


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


def ss_constants(m: int, epsilon: float) -> SSConstants:
    """ω = max(1, rint(m/(e^ε+1))), p = ωe^ε/(ωe^ε+m−ω), q as in SPEC §1."""
    e = math.exp(epsilon)
    omega = max(1, int(np.rint(m / (e + 1))))
    denom = omega * e + m - omega
    p = omega * e / denom
    q = (omega * e * (omega - 1) + (m - omega) * omega) / ((m - 1) * denom)
    return SSConstants(m, omega, p, q)


def _uniform_subsets(n: int, size: int, pool: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform ``size``-subsets of ``[pool]``, sorted rows, in O(size·log size) per row.

    Draw with replacement, then redraw the duplicate positions until every row is distinct.
    Exchangeability makes the accepted set uniform; since size <= pool/2 here, few rounds suffice.
    """
    out = rng.integers(0, pool, (n, size))
    out.sort(axis=1)
    todo = np.arange(n)
    while size > 1:
        sub = out[todo]
        dup = np.zeros(sub.shape, dtype=bool)
        dup[:, 1:] = sub[:, 1:] == sub[:, :-1]
        rows = dup.any(axis=1)
        if not rows.any():
            break
        todo, sub, dup = todo[rows], sub[rows], dup[rows]
        sub[dup] = rng.integers(0, pool, int(dup.sum()))
        sub.sort(axis=1)
        out[todo] = sub
    return out


def sample_subsets(values: np.ndarray, c: SSConstants, rng: np.random.Generator) -> np.ndarray:
    """SS randomizer for a batch of values in ``[m]``: ``int64[n, ω]`` sorted subsets.

    Draw a uniform ω-subset of ``[m]∖{r}``; with probability p replace one uniformly chosen member
    by r. The kept ω−1 members are then a uniform (ω−1)-subset of ``[m]∖{r}``: exactly SPEC §1.
    """
    r = np.asarray(values, dtype=np.int64)
    n = len(r)
    z = _uniform_subsets(n, c.omega, c.m - 1, rng)
    z += z >= r[:, None]                      # map [m-1] onto [m] \ {r}
    hit = np.nonzero(rng.random(n) < c.p)[0]
    z[hit, rng.integers(0, c.omega, len(hit))] = r[hit]
    z.sort(axis=1)
    return z


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


def decode_subsets(raw: np.ndarray, c: SSConstants) -> tuple[np.ndarray, np.ndarray]:
    """Payloads → (sorted ``int64[n, ω]`` subsets, reason per row)."""
    if c.encoding == "indices":
        return decode_indices(raw, c.m, c.omega, distinct=True)
    return decode_bitmap(raw, c.m, c.omega)


@register_protocol("ss")
@dataclass(frozen=True)
class SubsetSelection(FrequencyProtocol):
    """Subset Selection on ``[k]`` (Wang et al. 2016; Ye & Barg 2018).

    Distribution: ``P(Z | x) ∝ e^{ε·[x∈Z]}`` over ω-subsets of [k], ``ω = max(1, rint(k/(e^ε+1)))``.
    Estimator: ``f̂_x = (C_x/n − q)/(p − q)``, ``C_x`` = reports whose subset contains x.
    Variance at ``f_x = 0``: ``q(1−q)/(n(p−q)²)``. Payload: the subset, as sorted indices or as a
    k-bit bitmap, whichever is shorter.
    """

    k: int
    epsilon: float
    ss: SSConstants = field(init=False, repr=False)

    def __post_init__(self):
        check_int("SubsetSelection", "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon("SubsetSelection", self.epsilon))
        object.__setattr__(self, "ss", ss_constants(self.k, self.epsilon))

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

    def estimate(self, acc: Counts) -> Estimate:
        n = acc.n
        f = debias(acc.counts, n, self.ss.p, self.ss.q)
        return Estimate(f, np.sqrt(self.variance(n, np.clip(f, 0, 1))), {"n": n})

    def variance(self, n, f=None):
        return pure_variance(self.k, n, self.ss.p, self.ss.q, f)

    def output_distribution(self, item):
        return subset_distribution(self.ss, item)
