"""Adaptive Thresholding Histogram Encoding (ATHE): THE with the threshold θ as a knob (SPEC §10).

Wang, Blocki, Li, Jha, USENIX Security 2017 (THE); Arcolezi et al., "Revisiting Locally
Differentially Private Protocols: Towards Better Trade-offs in Privacy, Utility, and Attack
Resistance" (θ as an attack-resistance knob). Adding Laplace(2/ε) noise to the one-hot vector and
keeping the coordinates above θ is a unary encoding with independent bits, so the sampler, wire
formats, server and attack are ``unary_encoding.UnaryEncoding``'s with THE's (p, q).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from privfreq.protocols.base import register_protocol
from privfreq.protocols.unary_encoding import UnaryEncoding

__all__ = ["ATHE", "the_pq", "the_real_epsilon"]


def the_pq(theta, epsilon):
    """``p = 1 − ½e^{ε(θ−1)/2}`` (1 + Laplace(2/ε) > θ), ``q = ½e^{−εθ/2}`` (Laplace(2/ε) > θ)."""
    return 1 - 0.5 * math.exp(epsilon * (theta - 1) / 2), 0.5 * math.exp(-epsilon * theta / 2)


def the_real_epsilon(theta, epsilon) -> float:
    """The exact privacy loss ``ln[p(1−q)/(q(1−p))]`` of the thresholded channel: at most ε for
    θ ∈ [1/2, 1] (post-processing of the ε-LDP Laplace histogram), equal only in the limit; at
    θ = 1 it is ``ln(2e^{ε/2} − 1)``, at θ = 1/2 ``2 ln(2e^{ε/4} − 1)``."""
    p, q = the_pq(theta, epsilon)
    return math.log(p * (1 - q) / (q * (1 - p)))


@register_protocol("athe")
@dataclass(frozen=True)
class ATHE(UnaryEncoding):
    """Thresholding Histogram Encoding with threshold ``theta`` ∈ [1/2, 1] (None: the θ of least
    variance, found by a bounded scalar solve and stored resolved).

    Distribution: k independent bits, bit x is 1 w.p. ``p = 1 − ½e^{ε(θ−1)/2}``, every other bit
    w.p. ``q = ½e^{−εθ/2}``; ε-LDP, real loss ``the_real_epsilon(θ, ε)`` < ε.
    Estimator ``f̂_x = (C_x/n − q)/(p − q)``; variance at f_x = 0 ``q(1−q)/(n(p−q)²)``.
    Attack: a uniform 1-bit; exact ASR as AUE's with these (p, q).
    """

    display_name = "ATHE"
    theta: float | None = None

    def _pq(self, e):
        if self.theta is None:
            from privfreq.protocols.tuning import best_mse_knob
            object.__setattr__(self, "theta", best_mse_knob("athe", self.k, e))
        try:
            theta = float(self.theta)
        except (TypeError, ValueError):
            raise ValueError(f"ATHE: theta must be a number in [0.5, 1], got {self.theta!r}") \
                from None
        if not 0.5 <= theta <= 1:
            raise ValueError(f"ATHE: theta must be in [0.5, 1], got {self.theta!r}")
        object.__setattr__(self, "theta", theta)
        return the_pq(theta, e)

    def diagnostics(self):
        return {"real_epsilon": the_real_epsilon(self.theta, self.epsilon)}
