"""Unary encoding protocols: Optimized Unary Encoding (OUE) and Symmetric Unary Encoding (SUE).

Wang, Blocki, Li, Jha, "Locally Differentially Private Protocols for Frequency Estimation",
USENIX Security 2017 (OUE, SUE); SUE is the basic one-time RAPPOR of Erlingsson, Pihur, Korolova,
CCS 2014. Reports are k-bit vectors. Sampling and counting are exact and chosen by a measured cost
model (``protocols.ue_sampler``): at high ε the ones are drawn sparsely in Θ(q·k) per report, at low
ε as packed random words.

Wire encodings (the ``encoding`` parameter, fixed per config, so a block's payload width and
meaning are fixed; ``to_params`` omits the default so existing configs keep their fingerprints):

* ``"bitmap"`` (default): the packed k-bit vector, ``uint8[n, ceil(k/8)]``, bit i in bit ``i % 8``
  (LSB first) of byte ``i // 8``; padding bits zero. Native values are the same bytes.
* ``"indices"``: ``w = index_width(max(k, cap + 1))`` bytes per field (little-endian): the number of ones c,
  then ``cap`` slots holding the c ones' positions strictly increasing, then zeros;
  ``w·(1 + cap)`` bytes. ``cap`` (``sparse_cap``) is the smallest count with
  ``P(ones > cap) <= 2^-64``; the report is drawn conditioned on at most ``cap`` ones (exact
  rejection), which leaves every likelihood ratio, hence ε, unchanged because the number of ones
  has the same law for every item, and moves the per-bit probabilities by at most 2^-64 (below
  float64 resolution of p and q, so the estimator and variance are those of OUE/SUE). Native
  values are the same bytes.
* ``"auto"``: resolved at construction to whichever of the two is shorter for (k, ε) (stored
  resolved, so the config pins the choice).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.attacks import mask_attack, mask_attack_asr
from privfreq.protocols.base import (Counts, Reason, ReportBatch, SupportCounting,
                                     register_protocol, set_fields)
from privfreq.protocols import ue_sampler
from privfreq.protocols.wire import PackedBitsPayload, check_packed, index_width

__all__ = ["OUE", "SUE", "UnaryEncoding", "CHUNK_ELEMENTS", "ENCODINGS", "sparse_cap"]

ENCODINGS = ("bitmap", "indices", "auto")
# Truncation bound of the "indices" encoding: P(more than cap ones) <= 2^-TAIL_LOG2. Part of the
# wire format (it fixes cap): never change it.
TAIL_LOG2 = 64

# Bits materialised at once (flip_bits: one float64 per bit; add_reports: one uint8 per bit; the
# "indices" payload: one slot per element). 2^22 keeps every temporary at <= 32 MiB while batches
# stay large enough for numpy to be fast.
CHUNK_ELEMENTS = 1 << 22
# Random words per dense_words call in randomize_bits (8 MiB): its undecided tail is shared by the
# whole batch, so numpy's per-step overhead is paid once per batch.
DENSE_BATCH_WORDS = 1 << 20
# Largest k for which output_distribution enumerates all 2^k bit vectors.
ENUMERATION_LIMIT_BITS = 16


def randomize_bits(x: np.ndarray, k: int, p: float, q: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Packed ``uint8[n, ceil(k/8)]``: bit x set w.p. ``p``, every other bit w.p. ``q``, all
    independent; padding bits zero. Exact; sparse or dense sampler by ``ue_sampler.use_sparse``
    (dense: ``ue_sampler.dense_words`` for about ``DENSE_BATCH_WORDS`` words at once, then bit x
    replaced by a Bernoulli(p))."""
    x = np.asarray(x, dtype=np.int64)
    n = len(x)
    out = np.empty((n, (k + 7) // 8), dtype=np.uint8)
    if ue_sampler.use_sparse(k, q):
        step = ue_sampler.sparse_chunk_rows(k, q)
        for lo in range(0, n, step):
            ones, _ = ue_sampler.sparse_rows(x[lo:lo + step], k, p, q, rng)
            out[lo:lo + len(ones)] = ue_sampler.rows_to_packed(ones, k)
        return out
    w = (k + 63) // 64
    step = max(1, DENSE_BATCH_WORDS // w)
    for lo in range(0, n, step):
        xs = x[lo:lo + step]
        c = len(xs)
        words = ue_sampler.dense_words(c * w, q, rng).reshape(c, w)
        if k % 64:
            words[:, -1] &= np.uint64((1 << (k % 64)) - 1)
        one = np.left_shift(np.uint64(1), (xs & 63).astype(np.uint64))
        rows = np.arange(c)
        words[rows, xs >> 6] &= ~one
        words[rows, xs >> 6] |= np.where(rng.random(c) < p, one, np.uint64(0))
        out[lo:lo + c] = ue_sampler.packed_from_words(words, k)
    return out


def flip_bits(packed: np.ndarray, k: int, p2: float, q2: float,
              rng: np.random.Generator) -> np.ndarray:
    """A second randomized response on packed rows (the instantaneous round of L-OSUE/L-SUE, RAPPOR's
    IRR): a 1-bit stays 1 w.p. ``p2``, a 0-bit becomes 1 w.p. ``q2``; chunks of
    ``CHUNK_ELEMENTS // k`` rows; padding bits stay zero."""
    n = len(packed)
    out = np.empty((n, (k + 7) // 8), dtype=np.uint8)
    step = max(1, CHUNK_ELEMENTS // k)
    for lo in range(0, n, step):
        bits = np.unpackbits(packed[lo:lo + step], axis=1, count=k, bitorder="little").view(bool)
        u = rng.random(bits.shape)
        out[lo:lo + len(bits)] = np.packbits(np.where(bits, u < p2, u < q2), axis=1,
                                             bitorder="little")
    return out


def count_bits(packed: np.ndarray, k: int) -> np.ndarray:
    """Column sums (int64[k]) of packed bit rows by carry-save adders over 64-bit words
    (``ue_sampler.count_words``); rows whose byte width is not a multiple of 8 are zero-padded
    in chunks of about ``CHUNK_ELEMENTS`` bits. No per-report loop."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    n, nb = packed.shape
    if nb % 8 == 0:
        return ue_sampler.count_words(packed.view("<u8"), k)
    w = (nb + 7) // 8
    total = np.zeros(k, dtype=np.int64)
    step = max(1, CHUNK_ELEMENTS // (64 * w))
    for lo in range(0, n, step):
        chunk = packed[lo:lo + step]
        wide = np.zeros((len(chunk), 8 * w), dtype=np.uint8)
        wide[:, :nb] = chunk
        total += ue_sampler.count_words(wide.view("<u8"), k)
    return total


def sparse_cap(k: int, p: float, q: float) -> int:
    """Smallest c with ``P(Bin(k−1, q) + Bern(p) > c) <= 2^-TAIL_LOG2`` (at most k)."""
    from scipy.stats import binom
    lo, hi = 0, k
    limit = -TAIL_LOG2 * math.log(2)
    m = k - 1

    def log_tail(c):   # log P(B + b > c) = log(p·P(B > c−1) + (1−p)·P(B > c))
        a = math.log(p) + float(binom.logsf(c - 1, m, q)) if p > 0 else -math.inf
        b = math.log1p(-p) + float(binom.logsf(c, m, q)) if p < 1 else -math.inf
        return np.logaddexp(a, b)

    while lo < hi:
        mid = (lo + hi) // 2
        if log_tail(mid) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class UnaryEncoding(PackedBitsPayload, SupportCounting):
    """Shared machinery of OUE and SUE; subclasses set ``p`` and ``q`` (see their docstrings).

    Attack: a uniform index among the report's 1-bits (uniform over [k] if none); exact ASR
    ``p·(1−(1−q)^k)/(k q) + (1−p)(1−q)^{k−1}/k`` (from ``E[1/(1+B)] = (1−(1−q)^k)/(kq)``,
    ``B ~ Bin(k−1, q)``).
    """

    asr_kind = "exact"

    k: int
    epsilon: float
    encoding: str = "bitmap"
    p: float = field(init=False, repr=False)
    q: float = field(init=False, repr=False)
    cap: int = field(init=False, repr=False)

    def _pq(self, e: float) -> tuple[float, float]:
        raise NotImplementedError

    def __post_init__(self):
        name = type(self).__name__
        self.set_support(*self._pq(self.check_k_epsilon()))
        if self.encoding not in ENCODINGS:
            raise ValueError(f"{name}: encoding must be one of {list(ENCODINGS)}, "
                             f"got {self.encoding!r}")
        cap = sparse_cap(self.k, self.p, self.q) if self.encoding != "bitmap" else self.k
        if self.encoding == "auto":
            shorter = index_width(max(self.k, cap + 1)) * (1 + cap) < (self.k + 7) // 8
            set_fields(self, encoding="indices" if shorter else "bitmap")
        set_fields(self, cap=cap if self.encoding == "indices" else self.k)

    def to_params(self):
        """The init fields; ``encoding`` only when it is not the default ``"bitmap"`` (configs
        made before the field existed keep their fingerprints)."""
        out = super().to_params()
        if out.get("encoding") == "bitmap":
            del out["encoding"]
        return out

    @property
    def _index_dtype(self):
        """Field width of the "indices" encoding: holds every position (< k) and the count (<= cap)."""
        return np.dtype({1: "u1", 2: "<u2", 4: "<u4"}[index_width(max(self.k, self.cap + 1))])

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng):
        """Bitmap: packed bits (``randomize_bits``). Indices: the sparse sampler conditioned on
        at most ``cap`` ones, written as (count, sorted positions, zero padding)."""
        x = self.check_items(items)
        n = len(x)
        if self.encoding == "bitmap":
            values = randomize_bits(x, self.k, self.p, self.q, rng)
        else:
            values = np.zeros((n, 1 + self.cap), dtype=self._index_dtype)
            step = ue_sampler.sparse_chunk_rows(self.k, self.q)
            for lo in range(0, n, step):
                ones, counts = ue_sampler.sparse_rows(x[lo:lo + step], self.k, self.p, self.q,
                                                      rng, cap=self.cap)
                block = values[lo:lo + len(ones)]
                block[:, 0] = counts
                # the ones, then zeros where the sentinel k pads the row (counts <= cap)
                w = min(self.cap, ones.shape[1])
                np.copyto(block[:, 1:1 + w], ones[:, :w], where=ones[:, :w] < self.k,
                          casting="unsafe")
            values = values.view(np.uint8).reshape(n, -1)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64), values)

    # ----- wire --------------------------------------------------------------------------------
    def information_bits(self):
        return self.k

    @property
    def packed_bits(self):
        return self.k

    @property
    def values_width(self):
        return self.payload_width(0)

    def payload_width(self, block):
        if self.encoding == "bitmap":
            return (self.k + 7) // 8
        return self._index_dtype.itemsize * (1 + self.cap)

    def decode_payloads(self, block, raw):
        """Bitmap: ``check_packed``. Indices: ``BAD_LENGTH`` (width), ``VALUE_OUT_OF_RANGE``
        (count > cap or a position >= k), ``DUPLICATE_VALUE`` (positions not strictly increasing),
        ``BAD_PADDING`` (a nonzero slot after the count)."""
        if self.encoding == "bitmap":
            return check_packed(raw, self.k)
        raw = np.array(raw, dtype=np.uint8, copy=True, ndmin=2)
        width = self.payload_width(0)
        reason = np.zeros(len(raw), dtype=np.int64)
        if raw.shape[1] != width:
            reason[:] = Reason.BAD_LENGTH
            return np.zeros((len(raw), width), dtype=np.uint8), reason
        vals = raw.view(self._index_dtype)
        cnt = vals[:, 0].astype(np.int64)
        idx = vals[:, 1:]
        live = np.arange(self.cap)[None, :] < cnt[:, None]
        pad = (~live & (idx != 0)).any(axis=1)
        out_of_range = (cnt > self.cap) | (live & (idx >= self.k)).any(axis=1)
        rising = np.diff(idx.astype(np.int64), axis=1) > 0
        dup = (live[:, 1:] & ~rising).any(axis=1)
        reason[pad] = Reason.BAD_PADDING
        reason[dup] = Reason.DUPLICATE_VALUE
        reason[out_of_range] = Reason.VALUE_OUT_OF_RANGE
        return raw, reason

    def _indices(self, values):
        """(int64 counts, index slots) of native "indices" values."""
        vals = np.ascontiguousarray(values).view(self._index_dtype)
        return vals[:, 0].astype(np.int64), vals[:, 1:]

    def _bits(self, values) -> np.ndarray:
        """Unpacked ``bool[n, k]`` of native values (either encoding)."""
        if self.encoding == "bitmap":
            return np.unpackbits(values, axis=1, count=self.k, bitorder="little").astype(bool)
        cnt, idx = self._indices(values)
        bits = np.zeros((len(cnt), self.k), dtype=bool)
        live = np.arange(self.cap)[None, :] < cnt[:, None]
        rows = np.broadcast_to(np.arange(len(cnt))[:, None], idx.shape)
        bits[rows[live], idx[live]] = True
        return bits

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        return (self.k,)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        """Bitmap: ``count_bits``; indices: one bincount of the slots (Θ(cap) per report)."""
        if self.encoding == "bitmap":
            acc.counts += count_bits(batch.values, self.k)
        else:
            slots = np.ascontiguousarray(batch.values).view(self._index_dtype)
            acc.counts += ue_sampler.count_indices(slots, self.k)
        acc.n_block[0] += len(batch)
        return acc

    def attack(self, batch, rng):
        return mask_attack(self, batch, rng, lambda sl: self._bits(batch.values[sl]))

    def closed_form_asr(self, f=None):
        return float(mask_attack_asr(self.k, self.p, self.q))

    def output_distribution(self, item):
        """Exact ``P(bits | item)`` over all ``2^k`` bit vectors (keys: tuples of 0/1)."""
        if self.k > ENUMERATION_LIMIT_BITS:
            raise ValueError(f"{type(self).__name__}: output_distribution enumerates 2^k outputs; "
                             f"k must be <= {ENUMERATION_LIMIT_BITS}, got {self.k}")
        out = {}
        for bits in itertools.product((0, 1), repeat=self.k):
            prob = 1.0
            for i, b in enumerate(bits):
                r = self.p if i == item else self.q
                prob *= r if b else 1 - r
            out[bits] = prob
        return out


@register_protocol("oue")
@dataclass(frozen=True)
class OUE(UnaryEncoding):
    """Optimized Unary Encoding (Wang, Blocki, Li, Jha, USENIX Security 2017).

    Distribution: the client one-hot encodes x in k bits and flips them independently: bit x is 1
    w.p. ``p = 1/2``; every other bit is 1 w.p. ``q = 1/(e^ε+1)``. Likelihood ratio of any two
    inputs is at most ``p(1−q)/(q(1−p)) = e^ε`` (tight).
    Estimator: ``f̂_x = (C_x/n − q)/(p − q)`` with ``C_x`` the reports whose bit x is 1.
    Variance: ``[q(1−q) + f_x (p−q)(1−p−q)]/(n (p−q)²)``; at ``f_x = 0`` ``4e^ε/(n (e^ε−1)²)``.
    Native values and payload: the packed k-bit vector (``encoding="bitmap"``) or the count and
    sorted positions of the ones (``"indices"``); see the module docstring.
    """

    display_name = "OUE"

    def _pq(self, e):
        return 0.5, 1.0 / (math.exp(e) + 1.0)


@register_protocol("sue")
@dataclass(frozen=True)
class SUE(UnaryEncoding):
    """Symmetric Unary Encoding = basic one-time RAPPOR (Erlingsson, Pihur, Korolova, CCS 2014;
    analysed in Wang, Blocki, Li, Jha, USENIX Security 2017).

    Distribution: k bits, bit x is 1 w.p. ``p = e^{ε/2}/(e^{ε/2}+1)``, every other bit w.p.
    ``q = 1/(e^{ε/2}+1)``; likelihood ratio ``p(1−q)/(q(1−p)) = e^ε`` (tight).
    Estimator: ``f̂_x = (C_x/n − q)/(p − q)``.
    Variance: ``[q(1−q) + f_x (p−q)(1−p−q)]/(n (p−q)²)``; at ``f_x = 0``
    ``e^{ε/2}/(n (e^{ε/2}−1)²)``. Payload: as for OUE (``encoding``).
    """

    display_name = "SUE"

    def _pq(self, e):
        h = math.exp(e / 2)
        return h / (h + 1.0), 1.0 / (h + 1.0)
