"""Count Mean Sketch (CMS) and Hadamard Count Mean Sketch (HCMS) for universes too large to list.

Apple Differential Privacy Team, "Learning with Privacy at Scale" (Apple ML Journal, 2017); SPEC §9.
Items are 64-bit ids (``hashing.item_id`` of a name, or any int64); the client needs no domain.
The server's accumulator is an integer sketch of ``K`` rows (hash functions) × ``m`` buckets (m a
power of two), so any sharding merges exactly, and it answers any candidate list afterwards
(``estimate_candidates``). ``k`` is only the default candidate list ``[0, k)`` of the common
interface (``estimate``, attacks, influence).

Hash family: ``h_j(v) = hash_to_range(state_j, item_offsets(v), m)`` with
``state_j = mix64(mix64(hash_seed) + (j+1)·γ)`` (SplitMix64, ``protocols.hashing``); with m a power
of two the range reduction keeps the top log2(m) bits of a full-avalanche word, so over random
``hash_seed`` the ``h_j`` behave as independent uniform functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.attacks import mask_attack
from privfreq.protocols.base import (Counts, Estimate, FrequencyProtocol, ReportBatch, check_epsilon,
                                     check_int, register_protocol)
from privfreq.protocols.hadamard import fwht
from privfreq.protocols.hashing import hash_to_range, item_offsets, mix64, seed_state
from privfreq.protocols.unary_encoding import count_bits, randomize_bits
from privfreq.protocols.wire import IndexPayload, PackedBitsPayload

__all__ = ["CMS", "HCMS"]

# output_distribution enumerates every output: only for test-sized sketches.
ENUMERATION_LIMIT = 1 << 16


def _parity(v):
    return np.bitwise_count(v) & 1


@dataclass(frozen=True)
class _Sketch(FrequencyProtocol):
    """Shared parameters, hashing and the count-mean estimator of CMS and HCMS.

    Estimator (counts): with ``S(v) = Σ_i Z_i(v)`` the sum of per-report unbiased contributions to
    ``1{h_J(x_i) = h_J(v)}`` (J the report's row), ``n̂_v = m/(m−1)·(S(v) − n/m)``; the frequency is
    ``f̂_v = n̂_v/n``. Over the hash family ``E[f̂_v] = f_v`` because
    ``E_h[1{h_j(x) = h_j(v)}] = 1/m`` for x ≠ v.

    Variance over the mechanism and the hash family (``n f`` users hold each item; ``a_i`` the
    fraction of rows where ``h_j(x_i) = h_j(v)``, ``E_h a_i = 1/m``,
    ``E_h a_i² = 1/m² + (m−1)/(m² K)`` for x_i ≠ v):
    ``Var(n̂_v) = (m/(m−1))²·[Σ_i E Z_i² − Σ_i E_h a_i² + Σ_{u≠v} n_u²·(m−1)/(m² K)]``
    (the last term: hash collisions of heavy items, which do not average out over users).
    """

    k: int
    epsilon: float
    hashes: int = 256
    buckets: int = 1024
    hash_seed: int = 0
    c: float = field(init=False, repr=False)

    def _check_sketch(self, name, eps_scale=1.0) -> float:
        """Validate the parameters; store ``c = (e+1)/(e−1)`` for ``e = exp(eps_scale·ε)`` and
        return e."""
        check_int(name, "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon(name, self.epsilon))
        if self.epsilon > 30:
            raise ValueError(f"{name}: epsilon must be <= 30, got {self.epsilon}")
        check_int(name, "hashes", self.hashes, 1, 1 << 16)
        check_int(name, "buckets", self.buckets, 2, 1 << 24)
        if self.buckets & (self.buckets - 1):
            raise ValueError(f"{name}: buckets must be a power of 2, got {self.buckets}")
        check_int(name, "hash_seed", self.hash_seed, -(1 << 63), (1 << 63) - 1)
        e = math.exp(self.epsilon * eps_scale)
        object.__setattr__(self, "c", (e + 1) / (e - 1))
        return e

    # ----- hashing -----------------------------------------------------------------------------
    def row_states(self, rows=None) -> np.ndarray:
        """``state_j`` (uint64) of rows ``j`` (default: all K)."""
        rows = np.arange(self.hashes) if rows is None else np.asarray(rows, dtype=np.int64)
        with np.errstate(over="ignore"):
            z = seed_state(self.hash_seed)[0] + item_offsets(rows)
        return mix64(z)

    def bucket(self, rows, items) -> np.ndarray:
        """``h_j(v)`` broadcast over ``rows`` and ``items`` (int64 arrays; items any int64)."""
        return hash_to_range(self.row_states(rows), item_offsets(items), self.buckets)

    def check_items(self, items) -> np.ndarray:
        """Items as int64 ids (any value: the universe is all 64-bit ids)."""
        items = np.asarray(items)
        if items.ndim != 1 or not np.issubdtype(items.dtype, np.integer):
            raise ValueError(f"{type(self).__name__}: items must be a 1-D integer array of ids, "
                             f"got dtype {items.dtype} and shape {items.shape}")
        return items.astype(np.int64, copy=False)

    # ----- estimator ---------------------------------------------------------------------------
    def sketch_sums(self, acc: Counts) -> np.ndarray:
        """``T[j, r] = Σ_{reports in row j} Z_i`` for every bucket r (float64[K, m])."""
        raise NotImplementedError

    def second_moment(self, same: bool) -> float:
        """``E Z_i²`` for a report of the candidate itself (``same``) or of an item hashed
        independently (averaged over the hash family)."""
        raise NotImplementedError

    def scores(self, acc: Counts, candidates) -> np.ndarray:
        """``S(v) = Σ_j T[j, h_j(v)]`` per candidate."""
        cand = self.check_items(candidates)
        t = self.sketch_sums(acc)
        b = self.bucket(np.arange(self.hashes)[:, None], cand[None, :])     # [K, c]
        return np.take_along_axis(t, b, axis=1).sum(axis=0)

    def estimate_candidates(self, acc: Counts, candidate_ids, stderr: bool = True
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Frequency estimates ``f̂_v`` (fractions of the n reports) and standard errors for any
        candidate ids. The standard error plugs ``clip(f̂, 0, 1)`` into ``variance`` (collision
        term over the candidates given; items outside the list are not counted)."""
        m, n = self.buckets, acc.n
        cand = self.check_items(candidate_ids)
        if n == 0:
            return np.zeros(len(cand)), np.full(len(cand), np.inf)
        f = m / (m - 1) * (self.scores(acc, cand) / n - 1.0 / m)
        if not stderr:
            return f, np.full(len(cand), np.nan)
        return f, np.sqrt(self.variance(n, np.clip(f, 0, 1)))

    def estimate(self, acc: Counts, stderr: bool = True) -> Estimate:
        """``estimate_candidates`` over the default candidates ``[0, k)``."""
        f, se = self.estimate_candidates(acc, np.arange(self.k), stderr)
        return Estimate(f, se, {"n": acc.n, "hashes": self.hashes, "buckets": self.buckets})

    def variance(self, n, f=None):
        """Per-candidate variance of ``f̂`` (fraction) over the mechanism and the hash family, for
        candidates ``[0, len(f))`` holding fractions ``f`` (None: ``f_v = 0``, no other candidate
        mass, i.e. the collision term of unknown heavy items is left out)."""
        m, big_k = self.buckets, self.hashes
        f = np.zeros(self.k) if f is None else np.asarray(f, dtype=np.float64)
        if n == 0:
            return np.full(f.shape, np.inf)
        ea2 = 1.0 / m**2 + (m - 1) / (m**2 * big_k)
        same, other = self.second_moment(True), self.second_moment(False)
        nv = n * f
        collide = (np.sum(nv**2) - nv**2) * (m - 1) / (m**2 * big_k)
        var = (nv * (same - 1.0) + (n - nv) * (other - ea2) + collide)
        return (m / (m - 1))**2 * var / n**2

    def information_bits(self):
        raise NotImplementedError

    # ----- influence ---------------------------------------------------------------------------
    def z_range(self) -> tuple[float, float]:
        """Smallest and largest ``Z`` one accepted report can add to a score."""
        raise NotImplementedError

    def worst_case_influence(self, counts: Counts) -> np.ndarray:
        """``m/(m−1)·max_Z |Z − S/n|/(n+1)`` per default candidate (no data: S/n read as 1/m)."""
        m, n = self.buckets, counts.n
        s = self.scores(counts, np.arange(self.k)) / n if n else np.full(self.k, 1.0 / m)
        lo, hi = self.z_range()
        return m / (m - 1) * np.maximum(np.abs(hi - s), np.abs(s - lo)) / (n + 1)

    def influence_bound(self, n_block) -> float:
        """``m/(m−1)·(Z_max − Z_min)/(n+1)``: S/n lies in ``[Z_min, Z_max]``."""
        lo, hi = self.z_range()
        m = self.buckets
        return m / (m - 1) * (hi - lo) / (int(np.sum(n_block)) + 1)


@register_protocol("hcms")
@dataclass(frozen=True)
class HCMS(IndexPayload, _Sketch):
    """Hadamard Count Mean Sketch (Apple 2017; SPEC §9).

    Distribution: j uniform in [K], l uniform in [m], ``w = H_m[h_j(v), l] = (−1)^{popcount(h_j(v)
    & l)}``, ``b = w`` w.p. ``e^ε/(1+e^ε)`` else ``−w``; sent as one index
    ``y = 2(j·m + l) + [b = +1] ∈ [2Km]``. Likelihood ratio of any output between two items is
    1 or e^ε: exactly ε-LDP (enumeration test) when some ``H_m[h_j(v), l] ≠ H_m[h_j(v'), l]``.

    Accumulator: ``T[j, l] = Σ b`` (int64[K, m], exact). Estimator: ``M = K·c·T·H_mᵀ`` with
    ``c = (e^ε+1)/(e^ε−1)``, ``n̂_v = m/(m−1)·((1/K)Σ_j M[j, h_j(v)] − n/m)``; per report
    ``Z = c·b·H_m[h_J(v), l] ∈ {±c}`` so ``E Z² = c²`` (variance in ``_Sketch``):
    ``Var(f̂_v) ≈ (m/(m−1))²·(c² − 1/m²)/n`` at ``f_v = 0`` for large K.
    Payload: ``index_width(2Km)`` bytes.
    """

    display_name = "HCMS"
    p_keep: float = field(init=False, repr=False)

    def __post_init__(self):
        e = self._check_sketch("HCMS")
        object.__setattr__(self, "p_keep", e / (1 + e))

    @property
    def output_size(self):
        return 2 * self.hashes * self.buckets

    def information_bits(self):
        return math.log2(self.output_size)

    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        j = rng.integers(0, self.hashes, n)
        l = rng.integers(0, self.buckets, n)
        w_pos = _parity(self.bucket(j, x) & l) == 0
        keep = rng.random(n) < self.p_keep
        y = 2 * (j * self.buckets + l) + (w_pos == keep)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), y[:, None])

    def count_shape(self):
        return (self.hashes, self.buckets)

    def add_reports(self, acc, batch):
        h = np.bincount(batch.values[:, 0], minlength=self.output_size).reshape(-1, 2)
        acc.counts += (h[:, 1] - h[:, 0]).reshape(self.hashes, self.buckets)
        acc.n_block[0] += len(batch)
        return acc

    def sketch_sums(self, acc):
        """``c·(T·H_mᵀ)``: the FWHT is exact on the integer sums."""
        return self.c * fwht(acc.counts).astype(np.float64)

    def second_moment(self, same):
        return self.c**2

    def z_range(self):
        return -self.c, self.c

    def _support(self, batch, cands):
        y = batch.values[:, 0]
        j, l, b = y // (2 * self.buckets), (y // 2) % self.buckets, y % 2
        w_pos = _parity(self.bucket(j[:, None], cands[None, :]) & l[:, None]) == 0
        return w_pos == (b[:, None] == 1)

    def attack(self, batch, rng):
        """Uniform member of the default candidates whose ``H[h_j(v), l]`` equals b (the
        maximum-likelihood set)."""
        cands = np.arange(self.k)
        return mask_attack(self, batch, rng, lambda sl: self._support(batch.take(sl), cands))

    def output_distribution(self, item):
        """Exact ``P(y | item)`` over ``[2Km]``."""
        if self.output_size > ENUMERATION_LIMIT:
            raise ValueError(f"HCMS: output_distribution needs 2Km <= {ENUMERATION_LIMIT}")
        y = np.arange(self.output_size)
        batch = ReportBatch(np.zeros(len(y), np.int64), np.zeros(len(y), np.int64), y[:, None])
        agree = self._support(batch, np.array([item]))[:, 0]
        base = 1.0 / (self.hashes * self.buckets)
        probs = np.where(agree, self.p_keep, 1 - self.p_keep) * base
        return dict(zip(y.tolist(), probs.tolist()))


@register_protocol("cms")
@dataclass(frozen=True)
class CMS(PackedBitsPayload, _Sketch):
    """Count Mean Sketch (Apple 2017; SPEC §9).

    Distribution: j uniform in [K] (the report's block), ``e = −1^m`` with ``e[h_j(v)] = +1``, each
    entry flipped independently w.p. ``1/(1+e^{ε/2})``; sends j and the m bits ``[ẽ_l = +1]``
    (``ceil(m/8)`` bytes, LSB first). Two items differ in at most two entries: exactly ε-LDP.

    Accumulator: ``B[j, l]`` = reports of row j with ``ẽ_l = +1`` (int64[K, m]) and reports per row
    ``n_j``. Estimator: ``Z = c/2·ẽ_{h_J(v)} + 1/2`` with ``c = (e^{ε/2}+1)/(e^{ε/2}−1)``, so
    ``T[j, r] = c/2·(2B[j, r] − n_j) + n_j/2`` and ``n̂_v = m/(m−1)·(Σ_j T[j, h_j(v)] − n/m)``;
    ``E Z² = (c²−1)/4 + a`` (a = 1 for the candidate itself, 1/m over the hash family otherwise).
    """

    display_name = "CMS"
    p_flip: float = field(init=False, repr=False)

    def __post_init__(self):
        e = self._check_sketch("CMS", eps_scale=0.5)
        object.__setattr__(self, "p_flip", 1 / (1 + e))

    @property
    def packed_bits(self):
        return self.buckets

    @property
    def n_blocks(self):
        return self.hashes

    def information_bits(self):
        return self.buckets + math.log2(self.hashes)

    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        j = rng.integers(0, self.hashes, n)
        # bucket h(x) is 1 w.p. 1 − p_flip, every other bucket w.p. p_flip: a unary encoding
        packed = randomize_bits(self.bucket(j, x), self.buckets, 1 - self.p_flip, self.p_flip, rng)
        return ReportBatch(j.astype(np.int64), np.zeros(n, np.int64), packed)

    def count_shape(self):
        return (self.hashes, self.buckets)

    def add_reports(self, acc, batch):
        values = np.asarray(batch.values, np.uint8)
        for j in np.unique(batch.block):
            acc.counts[j] += count_bits(values[batch.block == j], self.buckets)
        acc.n_block += np.bincount(batch.block, minlength=self.hashes)
        return acc

    def sketch_sums(self, acc):
        nj = acc.n_block[:, None].astype(np.float64)
        return self.c / 2 * (2 * acc.counts - nj) + nj / 2

    def second_moment(self, same):
        return (self.c**2 - 1) / 4 + (1.0 if same else 1.0 / self.buckets)

    def z_range(self):
        return (1 - self.c) / 2, (1 + self.c) / 2

    def _support(self, batch, cands):
        bits = np.unpackbits(np.asarray(batch.values, np.uint8), axis=1, count=self.buckets,
                             bitorder="little")
        h = self.bucket(batch.block[:, None], cands[None, :])
        return np.take_along_axis(bits, h, axis=1) == 1

    def attack(self, batch, rng):
        """Uniform member of the default candidates whose bucket bit is set (maximum
        likelihood: the likelihood depends only on ``ẽ[h_j(v)]``)."""
        cands = np.arange(self.k)
        return mask_attack(self, batch, rng, lambda sl: self._support(batch.take(sl), cands))

    def output_distribution(self, item):
        """Exact ``P((j, bits) | item)`` over ``K·2^m`` outputs."""
        big_k, m = self.hashes, self.buckets
        if big_k << m > ENUMERATION_LIMIT:
            raise ValueError(f"CMS: output_distribution needs K·2^m <= {ENUMERATION_LIMIT}")
        pats = (np.arange(1 << m)[:, None] >> np.arange(m)[None, :]) & 1      # [2^m, m]
        out = {}
        for j in range(big_k):
            e = np.zeros(m, dtype=np.int64)
            e[self.bucket([j], [item])[0]] = 1
            flips = (pats != e[None, :]).sum(axis=1)
            probs = self.p_flip**flips * (1 - self.p_flip)**(m - flips) / big_k
            for pat, pr in zip(range(1 << m), probs.tolist()):
                out[(j, pat)] = pr
        return out
