"""L-OSUE and L-SUE: memoized unary encoding (SPEC §7). Memo key = the value.

Reuses ``protocols.unary_encoding``'s public ``randomize_bits`` (permanent round) and
``count_bits`` (server); reports are packed k-bit vectors exactly as OUE/SUE's.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from privfreq.protocols.attacks import mask_attack, mask_attack_asr
from privfreq.protocols.base import ReportBatch, SupportCounting, register_protocol, set_fields
from privfreq.protocols.longitudinal import Longitudinal, TwoRoundFields, pack_words, unpack_words
from privfreq.protocols.unary_encoding import (ENUMERATION_LIMIT_BITS, count_bits, flip_bits,
                                               randomize_bits)
from privfreq.protocols.wire import PackedBitsPayload

__all__ = ["LOSUE", "LSUE", "LongitudinalUnary"]


@dataclass(frozen=True)
class LongitudinalUnary(PackedBitsPayload, TwoRoundFields, Longitudinal, SupportCounting):
    """Shared machinery; subclasses set ``(p1, q1)`` and ``(p2, q2)`` in ``_rounds``.

    Estimator: ``f̂ = (C/n − q*)/(p* − q*)``, ``p* = p1p2+(1−p1)q2``, ``q* = q1p2+(1−q1)q2``;
    variance ``[q*(1−q*) + f (p*−q*)(1−p*−q*)]/(n (p*−q*)²)``. Budget: ε∞ per distinct value,
    cap ``k·ε∞``. Attack: a uniform index among the 1-bits (as OUE/SUE, with ``p*, q*``).
    Both calibrations give the same channel: the published unary formulas are exact.
    """

    asr_kind = "exact"

    def _rounds(self, eps_perm, eps1):
        raise NotImplementedError

    def __post_init__(self):
        p1, q1, p2, q2 = self._rounds(*self.check_budgets())
        p, q = self.set_rounds(p1, q1, p2, q2)
        set_fields(self, real_epsilon=math.log(p * (1 - q) / (q * (1 - p))),
                   real_epsilon_perm=math.log(p1 * (1 - q1) / (q1 * (1 - p1))))

    @property
    def packed_bits(self):
        return self.k

    @property
    def memo_key_count(self):
        return self.k

    @property
    def memo_words(self):
        return (self.k + 63) // 64

    def permanent(self, keys, public, rng):
        packed = randomize_bits(np.asarray(keys, np.int64), self.k, self.p1, self.q1, rng)
        return pack_words(packed, self.memo_words)

    def instantaneous(self, memo, public, rng):
        n = len(memo)
        packed = unpack_words(memo, (self.k + 7) // 8)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64),
                           flip_bits(packed, self.k, self.p2, self.q2, rng))

    def randomize_permanent(self, items, rng):
        x = self.check_items(items)
        n = len(x)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64),
                           randomize_bits(x, self.k, self.p1, self.q1, rng))

    def information_bits(self):
        return self.k

    def count_shape(self):
        return (self.k,)

    def add_reports(self, acc, batch):
        acc.counts += count_bits(batch.values, self.k)
        acc.n_block[0] += len(batch)
        return acc

    def attack(self, batch, rng):
        return mask_attack(self, batch, rng, lambda sl: np.unpackbits(
            batch.values[sl], axis=1, count=self.k, bitorder="little").astype(bool))

    def closed_form_asr(self, f=None):
        return float(mask_attack_asr(self.k, self.p, self.q))

    def _bits_distribution(self, item, p, q):
        if self.k > ENUMERATION_LIMIT_BITS:
            raise ValueError(f"{type(self).__name__}: enumeration of 2^k outputs needs k <= "
                             f"{ENUMERATION_LIMIT_BITS}, got {self.k}")
        out = {}
        for bits in itertools.product((0, 1), repeat=self.k):
            prob = 1.0
            for i, b in enumerate(bits):
                r = p if i == item else q
                prob *= r if b else 1 - r
            out[bits] = prob
        return out

    def permanent_distribution(self, item):
        """Exact ``P(B′ | item)`` over the 2^k bit vectors (round 1, ε∞)."""
        return self._bits_distribution(item, self.p1, self.q1)

    def output_distribution(self, item):
        """Exact ``P(report | item)``: bits independent with ``(p*, q*)`` (memo and instantaneous
        flips are independent per bit)."""
        return self._bits_distribution(item, self.p, self.q)


@register_protocol("losue")
@dataclass(frozen=True)
class LOSUE(LongitudinalUnary):
    """L-OSUE (Arcolezi et al. 2022; SPEC §7): OUE at ε∞ memoized, then symmetric flips.

    ``p1 = 1/2``, ``q1 = 1/(e^ε∞+1)``; ``p2 = (e^{ε∞+ε1}−1)/(e^ε∞−e^ε1+e^{ε∞+ε1}−1)``,
    ``q2 = 1−p2``. The composite is exactly OUE(ε1): ``p* = 1/2``, ``q* = 1/(e^ε1+1)``,
    ``V* = 4e^ε1/(n (e^ε1−1)²)``.
    """

    display_name = "L-OSUE"

    def _rounds(self, eps_perm, eps1):
        a = math.expm1(eps_perm + eps1)
        p2 = a / (math.exp(eps_perm) - math.exp(eps1) + a)
        return 0.5, 1.0 / (math.exp(eps_perm) + 1.0), p2, 1.0 - p2


@register_protocol("lsue")
@dataclass(frozen=True)
class LSUE(LongitudinalUnary):
    """L-SUE = RAPPOR's permanent + instantaneous randomized response on a one-hot vector
    (Erlingsson, Pihur, Korolova 2014; SPEC §7).

    ``p1 = e^{ε∞/2}/(e^{ε∞/2}+1)``, ``q1 = 1−p1``; ``q2 = 1−p2`` with ``p2 = (p* − q1)/(p1 − q1)``
    solving ``p* = e^{ε1/2}/(e^{ε1/2}+1)``, so the composite is exactly SUE(ε1):
    ``V* = e^{ε1/2}/(n (e^{ε1/2}−1)²)``.
    """

    display_name = "L-SUE"

    def _rounds(self, eps_perm, eps1):
        h1, h = math.exp(eps_perm / 2), math.exp(eps1 / 2)
        p1 = h1 / (h1 + 1)
        p_star = h / (h + 1)
        p2 = (p_star - (1 - p1)) / (2 * p1 - 1)
        return p1, 1 - p1, p2, 1 - p2
