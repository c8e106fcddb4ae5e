"""Unary encoding protocols: Optimized Unary Encoding (OUE) and Symmetric Unary Encoding (SUE).

Wang, Blocki, Li, Jha, "Locally Differentially Private Protocols for Frequency Estimation",
USENIX Security 2017 (OUE, SUE); SUE is the basic one-time RAPPOR of Erlingsson, Pihur, Korolova,
CCS 2014. Reports are k-bit vectors, kept packed (``np.packbits(..., bitorder="little")``) from the
client to the accumulator: native values and payloads are both ``uint8[n, ceil(k/8)]``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from privfreq.protocols.attacks import mask_attack
from privfreq.protocols.base import (Counts, ReportBatch, SupportCounting, check_epsilon, check_int,
                                     register_protocol)
from privfreq.protocols.wire import PackedBitsPayload

__all__ = ["OUE", "SUE", "UnaryEncoding", "CHUNK_ELEMENTS"]

# Bits materialised at once (randomize: one float64 per bit; add_reports: one uint8 per bit).
# 2^22 keeps every temporary at <= 32 MiB while batches stay large enough for numpy to be fast.
CHUNK_ELEMENTS = 1 << 22
# Largest k for which output_distribution enumerates all 2^k bit vectors.
ENUMERATION_LIMIT_BITS = 16


def randomize_bits(x: np.ndarray, k: int, p: float, q: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Packed ``uint8[n, ceil(k/8)]``: bit x set w.p. ``p``, every other bit w.p. ``q``.

    Processed in chunks of ``CHUNK_ELEMENTS // k`` reports; padding bits are zero.
    """
    n = len(x)
    out = np.empty((n, (k + 7) // 8), dtype=np.uint8)
    step = max(1, CHUNK_ELEMENTS // k)
    for lo in range(0, n, step):
        xs = x[lo:lo + step]
        c = len(xs)
        bits = rng.random((c, k)) < q
        bits[np.arange(c), xs] = rng.random(c) < p
        out[lo:lo + c] = np.packbits(bits, axis=1, bitorder="little")
    return out


def count_bits(packed: np.ndarray, k: int) -> np.ndarray:
    """Column sums (int64[k]) of packed bit rows, in chunks; no per-report loop."""
    total = np.zeros(k, dtype=np.int64)
    step = max(1, CHUNK_ELEMENTS // k)
    for lo in range(0, len(packed), step):
        bits = np.unpackbits(packed[lo:lo + step], axis=1, count=k, bitorder="little")
        total += bits.sum(axis=0, dtype=np.int64)
    return total


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
    p: float = field(init=False, repr=False)
    q: float = field(init=False, repr=False)

    def _pq(self, e: float) -> tuple[float, float]:
        raise NotImplementedError

    def __post_init__(self):
        name = type(self).__name__
        check_int(name, "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon(name, self.epsilon))
        p, q = self._pq(self.epsilon)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)

    # ----- client ------------------------------------------------------------------------------
    def randomize(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64),
                           randomize_bits(x, self.k, self.p, self.q, rng))

    # ----- wire --------------------------------------------------------------------------------
    def information_bits(self):
        return self.k

    @property
    def packed_bits(self):
        return self.k

    # ----- server ------------------------------------------------------------------------------
    def count_shape(self):
        return (self.k,)

    def add_reports(self, acc: Counts, batch: ReportBatch) -> Counts:
        acc.counts += count_bits(batch.values, self.k)
        acc.n_block[0] += len(batch)
        return acc

    def attack(self, batch, rng):
        return mask_attack(self, batch, rng, lambda sl: np.unpackbits(
            batch.values[sl], axis=1, count=self.k, bitorder="little").astype(bool))

    def closed_form_asr(self, f=None):
        k, p, q = self.k, self.p, self.q
        return float(p * -math.expm1(k * math.log1p(-q)) / (k * q)
                     + (1 - p) * math.exp((k - 1) * math.log1p(-q)) / k)

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
    Native values and payload: the packed k-bit vector, ``uint8[n, ceil(k/8)]``, bit i in bit
    ``i % 8`` (LSB first) of byte ``i // 8``; the padding bits must be zero.
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
    ``e^{ε/2}/(n (e^{ε/2}−1)²)``. Payload: the packed k-bit vector, as for OUE.
    """

    display_name = "SUE"

    def _pq(self, e):
        h = math.exp(e / 2)
        return h / (h + 1.0), 1.0 / (h + 1.0)
