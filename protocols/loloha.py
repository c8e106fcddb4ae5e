"""LOLOHA and BiLOLOHA: longitudinal local hashing (Arcolezi et al., EDBT 2023; SPEC §7)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privfreq.protocols.base import ReportBatch, SupportCounting, check_int, register_protocol, set_fields
from privfreq.protocols.hashing import hash_to_range, item_offsets, seed_state
from privfreq.protocols.grr import grr_draw
from privfreq.protocols.longitudinal import Longitudinal, TwoRoundFields, grr_chain, grr_rounds
from privfreq.protocols.olh import LocalHashing
from privfreq.protocols.wire import IndexPayload

__all__ = ["LOLOHA", "BiLOLOHA", "optimal_g", "loloha_variance_at_zero"]

# g is searched over [2, G_SEARCH_LIMIT]: V*(g) grows like g for g >> e^ε1, and e^ε∞ <= e^30.
G_SEARCH_LIMIT = 1 << 20


def loloha_variance_at_zero(epsilon_perm: float, epsilon: float, g: int, calibration: str) -> float:
    """``n·Var`` of LOLOHA's estimate at f = 0: ``q(1−q)/(p*−q)²`` with ``q = 1/g``; under
    ``exact`` this is ``(e^ε1−1+g)²/((e^ε1−1)²(g−1))``."""
    p, _ = grr_chain(*grr_rounds(epsilon_perm, epsilon, g, calibration))
    q = 1.0 / g
    return q * (1 - q) / (p - q) ** 2


def optimal_g(epsilon_perm: float, epsilon: float, calibration: str = "exact") -> int:
    """The integer ``g >= 2`` minimising V* (SPEC §7: rint of the closed form can miss; the
    ``exact`` optimum over reals is ``g = e^ε1 + 1`` and V* is unimodal in g, so the scan from 2
    stops at the first rise past ``e^ε1 + 2``)."""
    best_g, best_v = 2, math.inf
    for g in range(2, G_SEARCH_LIMIT):
        v = loloha_variance_at_zero(epsilon_perm, epsilon, g, calibration)
        if v < best_v:
            best_g, best_v = g, v
        elif g > math.exp(epsilon) + 2:
            break
    return best_g


@register_protocol("loloha")
@dataclass(frozen=True)
class LOLOHA(LocalHashing, IndexPayload, TwoRoundFields, Longitudinal, SupportCounting):
    """LOLOHA (Arcolezi, Pinzón, Palamidessi, Gambs, EDBT 2023; SPEC §7). Memo key = the hash.

    Distribution: each user draws one public hash seed ``s`` (fixed for all rounds, sent in
    ``ReportBatch.seed``); ``h = H_s(v) ∈ [g]`` (``protocols.hashing``); permanent ``B′ =
    GRR_g(h)`` at ε∞, memoized per (user, h); every report ``(s, GRR(B′))`` with L-GRR's
    ``(p2, q2)`` on ``[g]`` (``exact`` or ``paper`` calibration).
    Estimator: ``C(v) = #{reports : H_s(v) = y}``, ``f̂ = (C/n − 1/g)/(p* − 1/g)`` with
    ``p* = p1p2 + (1−p1)q2`` (``q1 = 1/g`` in SPEC's chain form).
    Variance: ``[q(1−q) + f (p*−q)(1−p*−q)]/(n (p*−q)²)``, ``q = 1/g``; ``exact`` at f = 0:
    ``(e^ε1−1+g)²/(n (e^ε1−1)²(g−1))``. ``g`` (None) minimises it over integers (``optimal_g``).
    Budget: ε∞ per distinct hash value, cap ``g·ε∞`` whatever the number of rounds.
    Server cost and payload: as OLH (``Θ(n·k)`` hashes; ``y`` as one index of ``[g]``).
    Attack: a uniform member of ``{v : H_s(v) = y}``; ASR ≈ ``p*·g·(1−(1−1/g)^k)/k``.
    """

    display_name = "LOLOHA"
    asr_kind = "approx"

    g: int | None = None
    seed_bits: int = 63

    def __post_init__(self):
        name = type(self).__name__
        eps_perm, eps1 = self.check_budgets()
        check_int(name, "seed_bits", self.seed_bits, 1, 63)
        g = optimal_g(eps_perm, eps1, self.calibration) if self.g is None else \
            check_int(name, "g", self.g, 2, (1 << 31) - 1)
        set_fields(self, g=g)
        p, _ = self.set_rounds(*grr_rounds(eps_perm, eps1, g, self.calibration))
        # a report supports a non-held item when their hashes collide: q = 1/g, not the chain's
        set_fields(self, q=1.0 / g, real_epsilon=math.log(p / ((1 - p) / (g - 1))),
                   real_epsilon_perm=eps_perm)

    # ----- state --------------------------------------------------------------------------------
    @property
    def memo_key_count(self):
        return self.g

    @property
    def public_width(self):
        return 1

    def draw_public(self, n, rng):
        return self.draw_seeds(n, rng)[:, None]

    def memo_keys(self, items, public):
        return hash_to_range(seed_state(public[:, 0]), item_offsets(items), self.g)

    def permanent(self, keys, public, rng):
        return grr_draw(np.asarray(keys, np.int64), self.g, self.p1, rng)[:, None]

    def instantaneous(self, memo, public, rng):
        n = len(memo)
        y = grr_draw(memo[:, 0], self.g, self.p2, rng)
        return ReportBatch(np.zeros(n, np.int64), np.ascontiguousarray(public[:, 0]), y[:, None])

    def randomize_permanent(self, items, rng):
        x = self.check_items(items)
        public = self.draw_public(len(x), rng)
        memo = self.permanent(self.memo_keys(x, public), public, rng)
        return ReportBatch(np.zeros(len(x), np.int64), public[:, 0].copy(), memo)

    def diagnostics(self):
        return {**self.longitudinal_diagnostics(), "g": self.g}

    # ----- exact distributions (small seed spaces) -------------------------------------------------
    def permanent_distribution(self, item):
        """Exact ``P((s, B′) | item)`` of round 1 (ε∞)."""
        return self.enumerate_outputs(item, self.p1)

    def output_distribution(self, item):
        """Exact ``P((s, y) | item)`` of one report (ε1 under ``exact``)."""
        return self.enumerate_outputs(item, self.p)


@register_protocol("biloloha")
@dataclass(frozen=True)
class BiLOLOHA(LOLOHA):
    """BiLOLOHA: LOLOHA with ``g = 2`` (budget cap ``2·ε∞``, the smallest possible)."""

    display_name = "BiLOLOHA"

    g: int | None = 2

    def __post_init__(self):
        if self.g != 2:
            raise ValueError(f"BiLOLOHA: g is 2 by definition, got {self.g!r} (use loloha)")
        super().__post_init__()
