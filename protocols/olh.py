"""Optimized Local Hashing (OLH)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.attacks import mask_attack
from privfreq.protocols.base import (Counts, ReportBatch, SupportCounting, check_int, register_protocol,
                                     set_fields)
from privfreq.protocols.grr import grr_draw
from privfreq.protocols.hashing import hash_to_range, item_offsets, mix64, seed_state
from privfreq.protocols.wire import IndexPayload

__all__ = ["LocalHashing", "OLH"]

# (report, item) pairs hashed per block in add_reports: n_chunk x k_chunk <= 2^18, i.e. a 2 MiB
# uint64 block, one 2 MiB scratch buffer and a 256 KiB mask, whatever n and k (k > 2^18 is split
# over items too; the O(k) counts and item offsets come on top). Measured at k = 2^20, n = 64:
# 2^18-pair blocks 3.1 ns/pair, 2^20 4.1, 2^22 (32 MiB) 5.4 (cache misses, page faults).
CHUNK_ELEMENTS = 1 << 18
# output_distribution enumerates every seed: only for test-sized seed spaces.
ENUMERATION_LIMIT_SEED_BITS = 16


def _range_start(y: np.ndarray, g: int) -> np.ndarray:
    """``⌈y·2^32/g⌉·2^32`` (uint64): the smallest mixed word whose range reduction is >= y."""
    y = y.astype(np.uint64)
    return ((((y << np.uint64(32)) + np.uint64(g - 1)) // np.uint64(g)) << np.uint64(32))


class LocalHashing:
    """Mixin of the local-hashing protocols (OLH, LOLOHA): a report is ``(s, y)`` with a public
    hash seed ``s`` of ``seed_bits`` bits and ``y ∈ [g]`` a randomized ``H_s(x)``; support counts
    ``C_v = #{reports : H_s(v) = y}``. Subclasses have fields ``k``, ``g``, ``seed_bits`` and the
    support probability ``p``."""

    @property
    def uses_seed(self) -> bool:
        return True

    def seed_bound(self) -> int:
        return 1 << self.seed_bits

    def hash_items(self, seeds, items) -> np.ndarray:
        """``H_s(v)`` broadcast over ``seeds[:, None]`` and ``items[None, :]`` (int64)."""
        return hash_to_range(seed_state(seeds)[:, None], item_offsets(items)[None, :], self.g)

    def draw_seeds(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniform public seeds in ``[0, seed_bound())`` (int64)."""
        if self.seed_bits < 63:
            return rng.integers(0, self.seed_bound(), n, dtype=np.int64)
        return rng.integers(0, 2**63 - 1, n, dtype=np.int64, endpoint=True)

    # ----- wire --------------------------------------------------------------------------------
    @property
    def output_size(self):
        return self.g

    def information_bits(self):
        """Seed plus hashed value: ``seed_bits + ⌈log2 g⌉``."""
        return self.seed_bits + math.ceil(math.log2(self.g))

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        return (self.k,)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        """Support counts in blocks of <= CHUNK_ELEMENTS (report, item) pairs (bounded memory).

        ``H_s(v) = y`` is tested on the mixed word w itself: ``((w >> 32)·g) >> 32 = y`` iff
        ``lo_y <= w < hi_y`` with ``lo_y = ⌈y·2^32/g⌉·2^32`` (see ``hashing.hash_to_range``), one
        wrapping subtraction and one compare instead of the range reduction."""
        n = len(batch)
        k_step = min(self.k, CHUNK_ELEMENTS)
        n_step = max(1, CHUNK_ELEMENTS // k_step)
        offsets = item_offsets(np.arange(self.k))
        y = batch.values[:, 0].astype(np.uint64)
        lo_y = _range_start(y, self.g)
        # hi_y − lo_y mod 2^64: for y = g−1, hi_y = 2^64 wraps to 0 and the difference is right
        width = _range_start(y + np.uint64(1), self.g) - lo_y
        states = seed_state(batch.seed) if n else np.empty(0, np.uint64)
        z = np.empty(n_step * k_step, dtype=np.uint64)
        tmp = np.empty_like(z)
        hit = np.empty(n_step * k_step, dtype=bool)
        for r0 in range(0, n, n_step):
            r1 = min(n, r0 + n_step)
            for v0 in range(0, self.k, k_step):
                v1 = min(self.k, v0 + k_step)
                shape = (r1 - r0, v1 - v0)
                zz = z[:shape[0] * shape[1]].reshape(shape)
                tt = tmp[:zz.size].reshape(shape)
                np.add(states[r0:r1, None], offsets[None, v0:v1], out=zz)
                mix64(zz, tt)
                zz -= lo_y[r0:r1, None]
                hh = np.less(zz, width[r0:r1, None], out=hit[:zz.size].reshape(shape))
                acc.counts[v0:v1] += hh.sum(axis=0, dtype=np.int64)
        acc.n_block[0] += n
        return acc

    def attack(self, batch, rng):
        items = np.arange(self.k)
        return mask_attack(self, batch, rng,
                           lambda sl: self.hash_items(batch.seed[sl], items) == batch.values[sl, :1])

    def closed_form_asr(self, f=None):
        g, k = self.g, self.k
        return float(self.p * g * -math.expm1(k * math.log1p(-1.0 / g)) / k)

    def enumerate_outputs(self, item, p_same) -> dict:
        """Exact ``P((s, y) | item)`` when ``y = H_s(item)`` w.p. ``p_same``, else a uniform other
        value of ``[g]`` (small seed spaces only)."""
        if self.seed_bits > ENUMERATION_LIMIT_SEED_BITS:
            raise ValueError(f"{type(self).__name__}: enumeration of every seed needs seed_bits "
                             f"<= {ENUMERATION_LIMIT_SEED_BITS}, got {self.seed_bits}")
        s_count = self.seed_bound()
        h = self.hash_items(np.arange(s_count), [item])[:, 0]
        other = (1 - p_same) / (self.g - 1) / s_count
        return {(s, y): (p_same / s_count if y == h[s] else other)
                for s in range(s_count) for y in range(self.g)}


@register_protocol("olh")
@dataclass(frozen=True)
class OLH(LocalHashing, IndexPayload, SupportCounting):
    """Optimized Local Hashing (Wang, Blocki, Li, Jha, USENIX Security 2017).

    Distribution: the client draws a public seed ``s`` uniformly from ``[0, 2^seed_bits)`` (sent in
    ``ReportBatch.seed``), hashes ``h = H_s(x) ∈ [g]`` with ``g = rint(e^ε)+1`` and applies GRR on
    ``[g]``: ``y = h`` w.p. ``p = e^ε/(e^ε+g−1)``, else each other value w.p. ``1/(e^ε+g−1)``.
    Likelihood ratio of any (s, y) between two inputs is at most e^ε (tight).
    Hash family: seeded SplitMix64 with multiply-shift range reduction (``protocols.hashing``),
    ``P_s[H_s(v) = H_s(x)] ≈ 1/g`` for ``v ≠ x``. Use the default ``seed_bits = 63`` in
    production; small seed spaces exist only so tests can enumerate ``P(s, y | x)`` exactly (with
    few seeds collisions are not exactly 1/g and the estimator is no longer unbiased).

    Estimator: support counts ``C_v = #{reports : H_s(v) = y}``; ``f̂_v = (C_v/n − q)/(p − q)``
    with ``q = 1/g`` (the probability that another item's hash hits y).
    Variance: ``[q(1−q) + f_v (p−q)(1−p−q)]/(n (p−q)²)``, at ``f_v = 0`` ≈ ``4e^ε/(n (e^ε−1)²)``.

    Cost model: the server must hash every item under every report's seed: ``Θ(n·k)`` hash
    evaluations (~10 uint64 ops each) in ``add_reports``, done in chunks of ``CHUNK_ELEMENTS // k``
    reports (and of items when k is larger) so the temporaries stay ``O(CHUNK_ELEMENTS)`` on top of
    the ``O(k)`` counts; ``estimate`` is ``O(k)``.
    Payload: ``y`` as one little-endian index of ``wire.index_width(g)`` bytes (the seed travels in
    its own report field; valid seeds are ``0 <= s < seed_bound() = 2^seed_bits``).
    Attack: a uniform member of ``{v : H_s(v) = y}`` (uniform over [k] if empty); ASR for an ideal
    random hash ``p·g·(1−(1−1/g)^k)/k`` (approximate).
    """

    display_name = "OLH"
    asr_kind = "approx"

    k: int
    epsilon: float
    seed_bits: int = 63
    g: int = field(init=False, repr=False)
    p: float = field(init=False, repr=False)
    q: float = field(init=False, repr=False)

    def __post_init__(self):
        e = math.exp(self.check_k_epsilon())
        check_int("OLH", "seed_bits", self.seed_bits, 1, 63)
        if e > 2.0**31:
            raise ValueError(f"OLH: epsilon must be <= {math.log(2.0**31):.3f} (g < 2^31), "
                             f"got {self.epsilon}")
        g = int(np.rint(e)) + 1
        set_fields(self, g=g)
        self.set_support(e / (e + g - 1), 1.0 / g)

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        seeds = self.draw_seeds(n, rng)
        y = grr_draw(hash_to_range(seed_state(seeds), item_offsets(x), self.g), self.g, self.p, rng)
        return ReportBatch(np.zeros(n, np.int64), seeds, y[:, None])

    def output_distribution(self, item):
        """Exact ``P((s, y) | item)`` over all ``2^seed_bits · g`` pairs (small seed spaces)."""
        return self.enumerate_outputs(item, self.p)
