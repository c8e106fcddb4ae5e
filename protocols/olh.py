"""Optimized Local Hashing (OLH)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from protocols.base import (Counts, Estimate, FrequencyProtocol, ReportBatch, check_epsilon,
                            check_int, register_protocol)
from protocols.estimators import debias, pure_variance
from protocols.hashing import hash_to_range, item_offsets, seed_state
from protocols.wire import decode_indices, encode_indices, index_width

__all__ = ["OLH"]

# (report, item) hash evaluations per chunk in add_reports: 2^22 uint64 = 32 MiB per temporary.
CHUNK_ELEMENTS = 1 << 22
# output_distribution enumerates every seed: only for test-sized seed spaces.
ENUMERATION_LIMIT_SEED_BITS = 16


@register_protocol("olh")
@dataclass(frozen=True)
class OLH(FrequencyProtocol):
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
    reports so memory stays ``O(CHUNK_ELEMENTS)``; ``estimate`` is ``O(k)``.
    Payload: ``y`` as one little-endian index of ``wire.index_width(g)`` bytes (the seed travels in
    its own report field; valid seeds are ``0 <= s < seed_bound() = 2^seed_bits``).
    """

    k: int
    epsilon: float
    seed_bits: int = 63
    g: int = field(init=False, repr=False)
    p: float = field(init=False, repr=False)
    q: float = field(init=False, repr=False)

    def __post_init__(self):
        check_int("OLH", "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon("OLH", self.epsilon))
        check_int("OLH", "seed_bits", self.seed_bits, 1, 63)
        e = math.exp(self.epsilon)
        if e > 2.0**31:
            raise ValueError(f"OLH: epsilon must be <= {math.log(2.0**31):.3f} (g < 2^31), "
                             f"got {self.epsilon}")
        g = int(np.rint(e)) + 1
        object.__setattr__(self, "g", g)
        object.__setattr__(self, "p", e / (e + g - 1))
        object.__setattr__(self, "q", 1.0 / g)

    @property
    def uses_seed(self) -> bool:
        return True

    def seed_bound(self) -> int:
        return 1 << self.seed_bits

    def hash_items(self, seeds, items) -> np.ndarray:
        """``H_s(v)`` broadcast over ``seeds[:, None]`` and ``items[None, :]`` (int64)."""
        return hash_to_range(seed_state(seeds)[:, None], item_offsets(items)[None, :], self.g)

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        seeds = rng.integers(0, self.seed_bound(), n, dtype=np.int64, endpoint=False) \
            if self.seed_bits < 63 else rng.integers(0, 2**63 - 1, n, dtype=np.int64, endpoint=True)
        h = hash_to_range(seed_state(seeds), item_offsets(x), self.g)
        keep = rng.random(n) < self.p
        other = rng.integers(0, self.g - 1, n)
        other += other >= h
        y = np.where(keep, h, other)
        return ReportBatch(np.zeros(n, np.int64), seeds, y[:, None])

    # ----- wire --------------------------------------------------------------------------------
    def payload_width(self, block):
        return index_width(self.g)

    def encode_payloads(self, block, values):
        return encode_indices(values, self.g)

    def decode_payloads(self, block, raw):
        return decode_indices(raw, self.g, 1, distinct=False)

    def information_bits(self):
        """Seed plus hashed value: ``seed_bits + ⌈log2 g⌉``."""
        return self.seed_bits + math.ceil(math.log2(self.g))

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        return (self.k,)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        offsets = item_offsets(np.arange(self.k))[None, :]
        y = batch.values[:, 0].astype(np.uint64)
        step = max(1, CHUNK_ELEMENTS // self.k)
        for lo in range(0, len(batch), step):
            h = hash_to_range(seed_state(batch.seed[lo:lo + step])[:, None], offsets, self.g,
                              as_int64=False)
            acc.counts += (h == y[lo:lo + step, None]).sum(axis=0, dtype=np.int64)
        acc.n_block[0] += len(batch)
        return acc

    def estimate(self, acc: Counts) -> Estimate:
        n = acc.n
        f = debias(acc.counts, n, self.p, self.q)
        return Estimate(f, np.sqrt(self.variance(n, np.clip(f, 0, 1))), {"n": n})

    def variance(self, n, f=None):
        return pure_variance(self.k, n, self.p, self.q, f)

    def output_distribution(self, item):
        """Exact ``P((s, y) | item)`` over all ``2^seed_bits · g`` pairs (small seed spaces)."""
        if self.seed_bits > ENUMERATION_LIMIT_SEED_BITS:
            raise ValueError(f"OLH: output_distribution enumerates every seed; seed_bits must be "
                             f"<= {ENUMERATION_LIMIT_SEED_BITS}, got {self.seed_bits}")
        s_count = self.seed_bound()
        h = self.hash_items(np.arange(s_count), [item])[:, 0]
        other = (1 - self.p) / (self.g - 1) / s_count
        return {(s, y): (self.p / s_count if y == h[s] else other)
                for s in range(s_count) for y in range(self.g)}
