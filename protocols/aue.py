"""Adaptive Unary Encoding (AUE): unary encoding with P(bit x = 1 | x) = p as a knob (SPEC §10).

Arcolezi et al., "Revisiting Locally Differentially Private Protocols: Towards Better Trade-offs in
Privacy, Utility, and Attack Resistance". Sampler, wire formats, server and attack are those of
``unary_encoding.UnaryEncoding``; only (p, q) differ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from privfreq.protocols.base import register_protocol
from privfreq.protocols.unary_encoding import UnaryEncoding

__all__ = ["AUE", "aue_q"]


def aue_q(p, epsilon):
    """``q = p/(e^ε(1−p) + p)``: the largest ratio ``p(1−q)/(q(1−p))`` is then exactly e^ε."""
    return p / (math.exp(epsilon) * (1 - p) + p)


@register_protocol("aue")
@dataclass(frozen=True)
class AUE(UnaryEncoding):
    """Adaptive Unary Encoding, knob ``p_true`` = P(bit x = 1 | x) ∈ [1/2, 1) (default 1/2 = OUE).

    Distribution: k independent bits, bit x is 1 w.p. ``p``, every other bit w.p.
    ``q = p/(e^ε(1−p)+p)``; likelihood ratio of two inputs at most ``p(1−q)/(q(1−p)) = e^ε`` (tight).
    Estimator ``f̂_x = (C_x/n − q)/(p − q)``; variance at f_x = 0 ``q(1−q)/(n(p−q)²)``, smallest at
    p = 1/2 (OUE). Attack: a uniform 1-bit (uniform over [k] if none); exact ASR
    ``p(1−(1−q)^k)/(kq) + (1−p)(1−q)^{k−1}/k``, which SPEC §10 writes as a sum over the number of
    ones.
    """

    display_name = "AUE"
    p_true: float = 0.5

    def _pq(self, e):
        try:
            p = float(self.p_true)
        except (TypeError, ValueError):
            raise ValueError(f"AUE: p_true must be a number in [0.5, 1), got {self.p_true!r}") \
                from None
        if not 0.5 <= p < 1:
            raise ValueError(f"AUE: p_true must be in [0.5, 1), got {self.p_true!r}")
        object.__setattr__(self, "p_true", p)
        return p, aue_q(p, e)
