"""Adaptive Subset Selection (ASS): Subset Selection with the subset size ω as a knob (SPEC §10).

Arcolezi et al., "Revisiting Locally Differentially Private Protocols: Towards Better Trade-offs in
Privacy, Utility, and Attack Resistance" (code hharcolezi/LDP_protocols_refined).
"""
from __future__ import annotations

from dataclasses import dataclass

from privfreq.protocols.base import check_epsilon, check_int, register_protocol
from privfreq.protocols.subset_selection import SubsetSelection, ss_constants

__all__ = ["AdaptiveSubsetSelection"]


@register_protocol("ass")
@dataclass(frozen=True)
class AdaptiveSubsetSelection(SubsetSelection):
    """Subset Selection on [k] with a chosen subset size ``omega`` ∈ [1, k−1] (None: SS's
    ``max(1, rint(k/(e^ε+1)))``, stored resolved).

    Distribution: ``P(Z | x) ∝ e^{ε·[x∈Z]}`` over ω-subsets of [k] (ε-LDP, tight for every ω).
    ``p = ωe^ε/(ωe^ε+k−ω)``, ``q = [ωe^ε(ω−1) + (k−ω)ω]/[(k−1)(ωe^ε+k−ω)]``.
    Estimator ``f̂_x = (C_x/n − q)/(p − q)``; variance at f_x = 0 ``q(1−q)/(n(p−q)²)``.
    Attack: a uniform member of Z; ASR ``p/ω = e^ε/(ωe^ε + k − ω)`` (exact): small ω raises it,
    large ω lowers it at a cost in MSE. Sampler, wire format and server are SS's.
    """

    display_name = "ASS"
    omega: int | None = None

    def __post_init__(self):
        check_int("ASS", "k", self.k, 2)
        object.__setattr__(self, "epsilon", check_epsilon("ASS", self.epsilon))
        omega = (ss_constants(self.k, self.epsilon).omega if self.omega is None
                 else check_int("ASS", "omega", self.omega, 1, self.k - 1))
        object.__setattr__(self, "omega", omega)
        ss = ss_constants(self.k, self.epsilon, omega)
        object.__setattr__(self, "ss", ss)
        object.__setattr__(self, "p", ss.p)
        object.__setattr__(self, "q", ss.q)
