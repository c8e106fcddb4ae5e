"""Adaptive Local Hashing (ALH): local hashing with the hash range g as a knob (SPEC §10).

Arcolezi et al., "Revisiting Locally Differentially Private Protocols: Towards Better Trade-offs in
Privacy, Utility, and Attack Resistance". Hash family, client, wire format, server and attack are
``olh.OLH``'s; only g differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privfreq.protocols.base import check_epsilon, check_int, register_protocol
from privfreq.protocols.olh import OLH

__all__ = ["ALH", "alh_g_max"]

G_LIMIT = 2**31 - 1        # hash_to_range works on 32-bit ranges (olh.OLH's bound on g)


def alh_g_max(k: int, epsilon: float) -> int:
    """Upper end of the knob, ``max(k, rint(e^ε + 1))`` (SPEC §10), within the hash's 2^31."""
    return int(min(G_LIMIT, max(k, int(np.rint(math.exp(epsilon) + 1)))))


@register_protocol("alh")
@dataclass(frozen=True)
class ALH(OLH):
    """Local hashing with hash range ``g`` ∈ [2, max(k, rint(e^ε+1))] (None: OLH's
    ``rint(e^ε)+1``, stored resolved).

    Distribution: public seed s, ``h = H_s(x) ∈ [g]``, GRR on [g]: ``y = h`` w.p.
    ``p = e^ε/(e^ε+g−1)``, else each other value w.p. ``1/(e^ε+g−1)``; ε-LDP, tight.
    Estimator ``f̂_v = (C_v/n − q)/(p − q)``, ``q = 1/g``; variance at f_v = 0
    ``(e^ε−1+g)²/(n(e^ε−1)²(g−1))``. Server Θ(n·k) hashes, as OLH.
    Attack: a uniform member of ``{v : H_s(v) = y}``; ASR for an ideal hash
    ``p·g·(1−(1−1/g)^k)/k`` (``closed_form_asr``, approximate); SPEC §10's cruder
    ``e^ε/((e^ε+g−1)·max(k/g, 1))`` is ``spec_asr``. Larger g: fewer collisions, higher ASR.
    """

    display_name = "ALH"
    g: int | None = None

    def __post_init__(self):
        check_int("ALH", "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon("ALH", self.epsilon))
        check_int("ALH", "seed_bits", self.seed_bits, 1, 63)
        e = math.exp(self.epsilon)
        g = self.g
        if g is None:
            if e > 2.0**31:
                raise ValueError(f"ALH: epsilon must be <= {math.log(2.0**31):.3f} (g < 2^31), "
                                 f"got {self.epsilon}")
            g = int(np.rint(e)) + 1
        g = check_int("ALH", "g", g, 2, alh_g_max(self.k, self.epsilon))
        object.__setattr__(self, "g", g)
        object.__setattr__(self, "p", e / (e + g - 1))
        object.__setattr__(self, "q", 1.0 / g)

    def spec_asr(self):
        e = math.exp(self.epsilon)
        return e / ((e + self.g - 1) * max(self.k / self.g, 1.0))
