"""Hadamard Response (HR), with a vectorized fast Walsh–Hadamard transform."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.attacks import chunked, f_or_uniform, fill_uniform, pick_uniform
from privfreq.protocols.base import (Counts, ReportBatch, SupportCounting, check_epsilon, check_int,
                                     register_protocol)
from privfreq.protocols.wire import IndexHistogram

__all__ = ["HadamardResponse", "fwht"]


def fwht(a: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh–Hadamard transform along the last axis (length a power of 2).

    ``out[..., r] = Σ_c (−1)^{popcount(r & c)} a[..., c]`` in ``O(K log K)`` vectorized butterflies
    (Sylvester ordering); integer input stays exact. Returns a new array.
    """
    a = np.array(a, copy=True)
    size = a.shape[-1]
    if size & (size - 1):
        raise ValueError(f"fwht: length must be a power of 2, got {size}")
    lead = a.shape[:-1]
    # In place on the copy: (x, y) <- (x + y, x - y) with one half-size scratch buffer, so the peak
    # is 1.5x the input.
    scratch = np.empty(a.size // 2, dtype=a.dtype) if size > 1 else None
    h = 1
    while h < size:
        v = a.reshape(*lead, size // (2 * h), 2, h)
        x, y = v[..., 0, :], v[..., 1, :]
        t = scratch.reshape(x.shape)
        np.copyto(t, x)
        x += y
        np.subtract(t, y, out=y)
        h *= 2
    return a


def _parity(v: np.ndarray) -> np.ndarray:
    return np.bitwise_count(v) & 1


@register_protocol("hr")
@dataclass(frozen=True)
class HadamardResponse(IndexHistogram, SupportCounting):
    """Hadamard Response (Acharya, Sun, Zhang, "Hadamard Response: Estimating Distributions
    Privately, Efficiently, and with Little Communication", AISTATS 2019), general-ε version.

    Layout: ``B`` blocks (a power of 2; by default the one minimising ``(e^ε+2B−1)²/B``, the
    variance factor below, capped at ``2^⌊log2 k⌋``), each a Hadamard code of length ``K``, the
    smallest power of 2 with ``K − 1 >= ⌈k/B⌉``. Item x lives in block ``j = x mod B`` with Hadamard
    row ``r = ⌊x/B⌋ + 1`` (row 0, all ones, is never used). Its set is
    ``C_x = {(j, c) : c ∈ [K], popcount(r & c) even}``, ``|C_x| = K/2``. Output: one index
    ``y = j'·K + c ∈ [B·K]``.

    Distribution: ``P(y | x) ∝ e^ε`` for ``y ∈ C_x`` and ``∝ 1`` otherwise, i.e. ``y ∈ C_x`` w.p.
    ``e^ε/(e^ε+2B−1)``, then uniform within ``C_x`` or its complement. Likelihood ratio e^ε (tight).

    Estimator (exact, unbiased): with ``h_j`` the histogram of outputs in block j and ``Ĥ_j`` its
    Walsh–Hadamard transform (``Ĥ_j[r] = #in C_x − #in block j but not in C_x``),
    ``f̂_x = (e^ε+2B−1)/((e^ε−1)·n) · Ĥ_{j(x)}[r(x)]``. Decoding costs ``O(B·K log K) = O(k log k)``.

    Variance (exact, n users with fixed items): with ``c = (e^ε−1)/(e^ε+2B−1)``, block mass
    ``P_j = Σ_{x' in block j} f_x'`` and ``π_j = [P_j (e^ε+1) + (1−P_j)·2]/(e^ε+2B−1)`` (the
    probability that a report lands in block j), ``Var(f̂_x) = (π_j − c² f_x)/(n c²)``. At
    ``f_x = 0`` with block mass ``1/B`` (f spread out): ``(e^ε+2B−1)²/(B n (e^ε−1)²)``, which for
    B = 1 is ``(e^ε+1)²/(n (e^ε−1)²)`` and for ``B ≈ e^ε/2`` about ``8/(n(e^ε−1))``.

    Influence of one report: ``Ĥ/n ∈ [−1, 1]`` and a report adds ``s_x ∈ {−1, 0, 1}`` to ``Ĥ_x``,
    so ``|Δ_x| ≤ (1 + |Ĥ_x/n|)·scale/(n + 1) ≤ 2·scale/(n + 1)``.

    Attack: a uniform member of ``{x : y ∈ C_x}``; exact ASR given f via one Walsh–Hadamard
    transform per block.

    Payload: y as one little-endian index of ``wire.index_width(B·K)`` bytes.
    """

    display_name = "HR"
    asr_kind = "exact"

    k: int
    epsilon: float
    blocks: int | None = None
    n_hadamard: int = field(init=False, repr=False)    # K
    e: float = field(init=False, repr=False)
    p_in: float = field(init=False, repr=False)        # P(y ∈ C_x | x)

    def __post_init__(self):
        check_int("HadamardResponse", "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon("HadamardResponse", self.epsilon))
        e = math.exp(self.epsilon)
        if not np.isfinite(e) or e > 1e12:
            raise ValueError(f"HadamardResponse: epsilon must be <= {math.log(1e12):.2f}, "
                             f"got {self.epsilon}")
        max_b = 1 << (self.k.bit_length() - 1)          # 2^⌊log2 k⌋
        if self.blocks is None:
            cands = [1 << i for i in range(max_b.bit_length())]
            b = min(cands, key=lambda bb: (e + 2 * bb - 1) ** 2 / bb)
            object.__setattr__(self, "blocks", b)
        else:
            check_int("HadamardResponse", "blocks", self.blocks, 1, max_b)
            if self.blocks & (self.blocks - 1):
                raise ValueError(f"HadamardResponse: blocks must be a power of 2, got {self.blocks}")
            object.__setattr__(self, "blocks", int(self.blocks))
        rows = -(-self.k // self.blocks)
        object.__setattr__(self, "n_hadamard", 1 << rows.bit_length())   # smallest 2^a > rows
        object.__setattr__(self, "e", e)
        object.__setattr__(self, "p_in", e / (e + 2 * self.blocks - 1))

    @property
    def output_size(self) -> int:
        return self.blocks * self.n_hadamard

    @property
    def scale(self) -> float:
        """``1/c = (e^ε+2B−1)/(e^ε−1)``."""
        return (self.e + 2 * self.blocks - 1) / (self.e - 1)

    def block_and_row(self, x):
        x = np.asarray(x, dtype=np.int64)
        return x % self.blocks, x // self.blocks + 1

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        big_k, b = self.n_hadamard, self.blocks
        j, r = self.block_and_row(x)
        low = r & -r                                   # lowest set bit of r: toggles parity
        inside = rng.random(n) < self.p_in
        # Outside C_x: K/2 odd-parity columns of block j plus (B−1)·K columns elsewhere.
        own = rng.random(n) < 1.0 / (2 * b - 1)
        col = rng.integers(0, big_k, n)
        want_odd = ~inside & own
        flip = (_parity(r & col) == 1) != want_odd
        same_block = inside | own
        col = np.where(same_block & flip, col ^ low, col)
        other = rng.integers(0, max(1, b - 1), n)
        other += other >= j
        blk = np.where(same_block, j, other)
        y = blk * big_k + col
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), y[:, None])

    # ----- wire --------------------------------------------------------------------------------
    def information_bits(self):
        return math.log2(self.output_size)

    # ----- server ------------------------------------------------------------------------------
    def transformed(self, acc: Counts) -> np.ndarray:
        """``Ĥ_{j(x)}[r(x)]`` for every item x (int64[k]), via one FWHT per block."""
        spec = fwht(acc.counts.reshape(self.blocks, self.n_hadamard))
        j, r = self.block_and_row(np.arange(self.k))
        return spec[j, r]

    def frequencies(self, acc: Counts) -> np.ndarray:
        """``f̂_x = scale·Ĥ_{j(x)}[r(x)]/n`` (zeros when n = 0)."""
        if acc.n == 0:
            return np.zeros(self.k)
        return self.scale * self.transformed(acc) / acc.n

    def diagnostics(self):
        return {"blocks": self.blocks, "hadamard_size": self.n_hadamard}

    def variance(self, n, f=None):
        """Exact per-item variance (see the class docstring); ``f=None``: ``f_x = 0`` with every
        block holding mass ``1/B``."""
        if n == 0:
            return np.full(self.k, np.inf)
        c = 1.0 / self.scale
        if f is None:
            return np.full(self.k, 1.0 / (self.blocks * n * c * c))
        f = np.asarray(f, dtype=np.float64)
        j, _ = self.block_and_row(np.arange(self.k))
        mass = np.bincount(j, weights=f, minlength=self.blocks)[j]
        pi = (mass * (self.e + 1) + (1 - mass) * 2) / (self.e + 2 * self.blocks - 1)
        return (pi - c * c * f) / (n * c * c)

    def influence_bound(self, n_block) -> float:
        return 2.0 * self.scale / (int(np.sum(n_block)) + 1)

    def worst_case_influence(self, counts: Counts) -> np.ndarray:
        n = counts.n
        h = self.transformed(counts) / n if n else np.zeros(self.k)
        return (1 + np.abs(h)) * self.scale / (n + 1)

    def _item_rows(self):
        """Rows ``r ∈ [1, K)`` as an array, and which (block, row) pairs are real items (x < k)."""
        r = np.arange(1, self.n_hadamard, dtype=np.int64)
        blk = np.arange(self.blocks, dtype=np.int64)
        valid = (r[None, :] - 1) * self.blocks + blk[:, None] < self.k      # [B, K−1]
        return r, valid

    def attack(self, batch, rng):
        big_k, b = self.n_hadamard, self.blocks
        r, valid = self._item_rows()
        y = batch.values[:, 0]
        blk, col = y // big_k, y % big_k
        n = len(batch)
        out = np.empty(n, dtype=np.int64)
        for sl in chunked(n, big_k):
            even = (np.bitwise_count(r[None, :] & col[sl, None]) & 1) == 0
            pick = pick_uniform(even & valid[blk[sl]], rng)                # index into r
            out[sl] = np.where(pick >= 0, pick * b + blk[sl], -1)          # x = (r−1)·B + j
        return fill_uniform(out, self.k, rng)

    def closed_form_asr(self, f=None):
        f = f_or_uniform(self, f)
        big_k, b, k = self.n_hadamard, self.blocks, self.k
        ind = np.zeros((b, big_k))
        _, valid = self._item_rows()
        ind[:, 1:] = valid
        # cnt[j, c] = #{real rows r of block j with popcount(r & c) even} = (|R_j| + WHT(1_R_j)[c])/2
        cnt = np.rint((ind.sum(axis=1, keepdims=True) + fwht(ind)) / 2)
        g = np.divide(1.0, cnt, out=np.zeros_like(cnt), where=cnt > 0)
        # Σ_{c : popcount(r & c) even} g[j, c] = (Σ_c g[j, c] + WHT(g_j)[r]) / 2
        even_sum = (g.sum(axis=1, keepdims=True) + fwht(g)) / 2
        j, r = self.block_and_row(np.arange(k))
        hit = self.p_in * (2.0 / big_k) * even_sum[j, r]
        empty = float((cnt == 0).sum())        # outputs with no candidate: guess uniform over [k]
        p_out = (1 - self.p_in) / (b * big_k - big_k / 2)
        return float(np.sum(f * hit) + p_out * empty / k)

    def output_distribution(self, item):
        """Exact ``P(y | item)`` over ``[B·K]``."""
        j, r = self.block_and_row(item)
        y = np.arange(self.output_size)
        inside = (y // self.n_hadamard == j) & (_parity(r & (y % self.n_hadamard)) == 0)
        z = self.e * self.n_hadamard / 2 + self.output_size - self.n_hadamard / 2
        probs = np.where(inside, self.e, 1.0) / z
        return dict(zip(y.tolist(), probs.tolist()))
