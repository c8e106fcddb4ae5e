"""dBitFlipPM: d memoized bucket bits per user (Ding, Kulkarni, Yekhanin, NeurIPS 2017; SPEC §7)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.base import (Counts, Estimate, FrequencyProtocol, Reason, ReportBatch,
                                     check_epsilon, check_int, register_protocol)
from privfreq.protocols.longitudinal import (MAX_EPSILON_PERM, Longitudinal, pack_words,
                                             unpack_words)
from privfreq.protocols.wire import decode_indices, encode_indices, index_width

__all__ = ["DBitFlipPM", "draw_distinct"]

# output_distribution enumerates every bucket set and bit pattern: C(b, d)·2^d outputs.
ENUMERATION_LIMIT = 1 << 16


def draw_distinct(n: int, b: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform d-subsets of ``[b]``, sorted per row (int64[n, d]); Floyd's algorithm
    vectorized over rows (d steps, O(n·d²))."""
    out = np.empty((n, d), dtype=np.int64)
    for i, j in enumerate(range(b - d, b)):
        t = rng.integers(0, j + 1, n)
        taken = (out[:, :i] == t[:, None]).any(axis=1)
        out[:, i] = np.where(taken, j, t)
    out.sort(axis=1)
    return out


@register_protocol("dbitflip")
@dataclass(frozen=True)
class DBitFlipPM(Longitudinal, FrequencyProtocol):
    """dBitFlipPM (Ding, Kulkarni, Yekhanin, "Collecting Telemetry Data Privately", NeurIPS 2017).

    Buckets: ``b = k`` (items are the buckets; bucketize upstream). Each user draws once ``d``
    distinct buckets ``j_1 < … < j_d`` (public, sent in the report). The memo key of item v is its
    position among them (``d`` if none: at most ``min(d+1, b)`` keys); the memo entry is the d
    bits ``1[v = j_i]``, each kept w.p. ``e^{ε∞/2}/(e^{ε∞/2}+1)`` (SUE-style), drawn once per key.
    No instantaneous round: every report is the memo entry itself, so one report is
    ``ε∞``-LDP (exactly ε∞ when d >= 2, ε∞/2 when d = 1; ``real_epsilon``). ``epsilon`` (ε1) is
    therefore ε∞ (omit it or pass the same value).
    Estimator: ``f̂_j = (b/(n d))·Σ_{users holding j} (x(e^{ε∞/2}+1) − 1)/(e^{ε∞/2}−1)``.
    Variance: ``b·e^{ε∞/2}/(n d (e^{ε∞/2}−1)²) + f_j (b/d − 1)/n`` (the second term: which users
    hold bucket j is random); at f = 0 SPEC's V*.
    Budget: cap ``min(d+1, b)·ε∞``. Caveat: reports are deterministic given the memo, so a change
    of report reveals that the user's bucket changed (Ding et al. §4 add output perturbation).
    Values: ``int64[n, 2d]`` (buckets, then the 0/1 bits); payload: d indices of
    ``index_width(b)`` bytes, then the bits packed LSB first.
    """

    display_name = "dBitFlipPM"
    asr_kind = "none"

    k: int
    epsilon_perm: float
    epsilon: float | None = None
    d: int = 2
    calibration: str = "exact"
    h: float = field(init=False, repr=False)
    p1: float = field(init=False, repr=False)
    real_epsilon: float = field(init=False, repr=False)
    real_epsilon_perm: float = field(init=False, repr=False)

    def __post_init__(self):
        check_int("DBitFlipPM", "k", self.k, 2)
        eps = check_epsilon("DBitFlipPM", self.epsilon_perm)
        if eps > MAX_EPSILON_PERM:
            raise ValueError(f"DBitFlipPM: epsilon_perm must be <= {MAX_EPSILON_PERM}, got {eps}")
        if self.epsilon is not None and check_epsilon("DBitFlipPM", self.epsilon) != eps:
            raise ValueError(f"DBitFlipPM: no instantaneous round, a report is its permanent "
                             f"response: epsilon (ε1 = {self.epsilon}) must equal epsilon_perm "
                             f"(ε∞ = {self.epsilon_perm}) or be omitted")
        check_int("DBitFlipPM", "d", self.d, 1, self.k)
        if self.calibration not in ("exact", "paper"):
            raise ValueError(f"DBitFlipPM: calibration must be 'exact' or 'paper' (identical "
                             f"here), got {self.calibration!r}")
        set_ = object.__setattr__
        set_(self, "epsilon_perm", eps)
        set_(self, "epsilon", eps)
        h = math.exp(eps / 2)
        set_(self, "h", h)
        set_(self, "p1", h / (h + 1))
        set_(self, "real_epsilon_perm", eps if self.d >= 2 else eps / 2)
        set_(self, "real_epsilon", self.real_epsilon_perm)

    @property
    def b(self) -> int:
        return self.k

    # ----- state --------------------------------------------------------------------------------
    @property
    def memo_key_count(self):
        return min(self.d + 1, self.k)

    @property
    def public_width(self):
        return self.d

    @property
    def values_width(self):
        return 2 * self.d

    def draw_public(self, n, rng):
        return draw_distinct(n, self.k, self.d, rng)

    def memo_keys(self, items, public):
        hit = public == np.asarray(items, np.int64)[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), self.d).astype(np.int64)

    def permanent(self, keys, public, rng):
        keys = np.asarray(keys, np.int64)
        truth = np.arange(self.d)[None, :] == keys[:, None]
        u = rng.random(truth.shape)
        bits = np.where(truth, u < self.p1, u < 1 - self.p1)
        return pack_words(np.packbits(bits, axis=1, bitorder="little"), self.memo_words)

    @property
    def memo_words(self):
        return (self.d + 63) // 64

    def _bits(self, memo):
        packed = unpack_words(memo, (self.d + 7) // 8)
        return np.unpackbits(packed, axis=1, count=self.d, bitorder="little").astype(np.int64)

    def instantaneous(self, memo, public, rng):
        n = len(memo)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64),
                           np.hstack([public, self._bits(memo)]))

    def randomize_permanent(self, items, rng):
        return self.randomize(items, rng)

    # ----- wire --------------------------------------------------------------------------------
    def payload_width(self, block):
        return self.d * index_width(self.k) + (self.d + 7) // 8

    def encode_payloads(self, block, values):
        bits = np.packbits(values[:, self.d:].astype(np.uint8), axis=1, bitorder="little")
        return np.hstack([encode_indices(values[:, :self.d], self.k), bits])

    def decode_payloads(self, block, raw):
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        n = len(raw)
        if raw.ndim != 2 or raw.shape[1] != self.payload_width(0):
            return (np.zeros((n, 2 * self.d), np.int64),
                    np.full(n, Reason.BAD_LENGTH, np.int64))
        cut = self.d * index_width(self.k)
        buckets_raw = raw[:, :cut]
        buckets, reason = decode_indices(buckets_raw, self.k, self.d, distinct=True)
        # decode_indices sorts; the client sends sorted buckets, so an unsorted row is malformed
        unsorted = ~(decode_indices(buckets_raw, self.k, self.d, distinct=False)[0] == buckets).all(
            axis=1)
        reason[unsorted & (reason == Reason.OK)] = Reason.MALFORMED_RECORD
        packed = raw[:, cut:]
        pad = self.d % 8
        if pad:
            bad = (packed[:, -1] & np.uint8((0xFF << pad) & 0xFF)) != 0
            reason[bad & (reason == Reason.OK)] = Reason.BAD_PADDING
        bits = np.unpackbits(packed, axis=1, count=self.d, bitorder="little").astype(np.int64)
        return np.hstack([buckets, bits]), reason

    def information_bits(self):
        return math.log2(math.comb(self.k, self.d)) + self.d

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        """Row 0: 1-bits per bucket; row 1: reports holding the bucket."""
        return (2, self.k)

    def add_reports(self, acc, batch):
        buckets = batch.values[:, :self.d].reshape(-1)
        bits = batch.values[:, self.d:].reshape(-1)
        acc.counts[0] += np.bincount(buckets, weights=bits, minlength=self.k).astype(np.int64)
        acc.counts[1] += np.bincount(buckets, minlength=self.k)
        acc.n_block[0] += len(batch)
        return acc

    def frequencies(self, acc: Counts) -> np.ndarray:
        n = acc.n
        if n == 0:
            return np.zeros(self.k)
        ones, holders = acc.counts[0], acc.counts[1]
        return (self.k / (n * self.d)) * (ones * (self.h + 1) - holders) / (self.h - 1)

    def estimate(self, acc, stderr=True):
        f = self.frequencies(acc)
        se = (np.sqrt(self.variance(acc.n, np.clip(f, 0, 1))) if stderr
              else np.full(self.k, np.nan))
        return Estimate(f, se, {"n": acc.n, **self.longitudinal_diagnostics(), "d": self.d})

    def variance(self, n, f=None):
        f = np.zeros(self.k) if f is None else np.asarray(f, dtype=np.float64)
        if n == 0:
            return np.full(self.k, np.inf)
        b, d, h = self.k, self.d, self.h
        return b * h / (n * d * (h - 1) ** 2) + f * (b / d - 1) / n

    def influence_bound(self, n_block):
        """One report adds ``δ ∈ {0, −1, h}`` to ``S_j = ones_j(h+1) − holders_j`` and 1 to n:
        ``f̂_j`` moves by ``(b/d)/(h−1)·|δ − S_j/n|/(n+1)`` with ``S_j/n ∈ [−1, h]``, so at most
        ``(b/d)(h+1)/((n+1)(h−1))``."""
        n = int(np.sum(n_block))
        return self.k * (self.h + 1) / (self.d * (n + 1) * (self.h - 1))

    def worst_case_influence(self, counts):
        """Per bucket, ``max_δ (b/d)/(h−1)·|δ − S_j/n|/(n+1)`` over ``δ ∈ {0, −1, h}``."""
        n = counts.n
        s = (counts.counts[0] * (self.h + 1) - counts.counts[1]) / max(n, 1)
        dev = np.max(np.abs(np.array([0.0, -1.0, self.h])[:, None] - s[None, :]), axis=0)
        return self.k * dev / (self.d * (n + 1) * (self.h - 1))

    def attack(self, batch, rng):
        """A uniform reported bucket whose bit is 1 (uniform over [b] if none)."""
        from privfreq.protocols.attacks import mask_attack

        def mask(sl):
            vals = batch.values[sl]
            m = np.zeros((len(vals), self.k), dtype=bool)
            rows = np.repeat(np.arange(len(vals)), self.d)
            m[rows, vals[:, :self.d].reshape(-1)] = vals[:, self.d:].reshape(-1).astype(bool)
            return m
        return mask_attack(self, batch, rng, mask)

    # ----- exact distributions -----------------------------------------------------------------
    def _enumerate(self, item):
        n_sets = math.comb(self.k, self.d)
        if n_sets * 2**self.d > ENUMERATION_LIMIT:
            raise ValueError(f"DBitFlipPM: enumeration of C(b, d)·2^d outputs needs <= "
                             f"{ENUMERATION_LIMIT}, got {n_sets * 2**self.d}")
        out = {}
        for js in itertools.combinations(range(self.k), self.d):
            for bits in itertools.product((0, 1), repeat=self.d):
                prob = 1.0 / n_sets
                for j, bit in zip(js, bits):
                    r = self.p1 if j == item else 1 - self.p1
                    prob *= r if bit else 1 - r
                out[js + bits] = prob
        return out

    def permanent_distribution(self, item):
        """Exact ``P((buckets, bits) | item)``; the report is the memo entry."""
        return self._enumerate(item)

    def output_distribution(self, item):
        return self._enumerate(item)
