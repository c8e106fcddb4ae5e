"""Longitudinal collection with memoization (SPEC §7): the shared two-round machinery.

Every longitudinal protocol splits its randomizer in two (Erlingsson, Pihur, Korolova, CCS 2014;
Arcolezi et al., "Frequency Estimation of Evolving Data Under Local Differential Privacy", EDBT
2023):

* **public state** drawn once per user (``draw_public``): LOLOHA's hash seed, dBitFlipPM's buckets;
* **memo key** of an item (``memo_keys``): the value itself (L-GRR, L-OSUE, L-SUE), its hash
  (LOLOHA) or its position among the user's buckets (dBitFlipPM);
* **permanent response** ``B′ = R1(key)`` at ``ε∞`` (``permanent``), drawn once per (user, memo
  key) and stored forever (``protocols.longitudinal_client``);
* **instantaneous response** ``B″ = R2(B′)`` drawn afresh for every report (``instantaneous``),
  calibrated so one report is ``ε1``-LDP.

Memo entries are ``int64[n, memo_words]`` rows (a value, or packed bits viewed as 64-bit words), so
one vectorized store holds every protocol's state. Any number of reports about one memo key leak at
most ``ε∞`` (post-processing of B′); a user's spend is ``ε∞ × #distinct memo keys``, at most
``budget_cap = memo_key_count · ε∞``.

``randomize(items, rng)`` without state treats every report as a fresh user (public state and
permanent response drawn once, then one instantaneous report): the one-shot simulate path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from privfreq.protocols.base import ReportBatch, check_epsilon, check_int, set_fields

__all__ = [
    "CALIBRATIONS",
    "BudgetFields",
    "Longitudinal",
    "TwoRoundFields",
    "check_budgets",
    "grr_chain",
    "grr_lambda",
    "grr_rounds",
    "grr_second_round",
    "pack_words",
    "unpack_words",
]

CALIBRATIONS = ("exact", "paper")
# e^ε∞ must stay far below 2^53 so that p, q and their differences keep float64 precision.
MAX_EPSILON_PERM = 30.0


def check_budgets(owner: str, epsilon_perm, epsilon, calibration="exact") -> tuple[float, float]:
    """Validate ``(ε∞, ε1)``: finite, ``0 < ε1 < ε∞ <= MAX_EPSILON_PERM``; calibration known."""
    eps_perm = check_epsilon(owner, epsilon_perm)
    eps1 = check_epsilon(owner, epsilon)
    if eps_perm > MAX_EPSILON_PERM:
        raise ValueError(f"{owner}: epsilon_perm must be <= {MAX_EPSILON_PERM}, got {epsilon_perm}")
    if not eps1 < eps_perm:
        raise ValueError(f"{owner}: epsilon (ε1 = {epsilon}, one report) must be < epsilon_perm "
                         f"(ε∞ = {epsilon_perm}, the permanent round)")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"{owner}: calibration must be one of {list(CALIBRATIONS)}, "
                         f"got {calibration!r}")
    return eps_perm, eps1


def grr_lambda(epsilon: float, m: int) -> float:
    """``λ_m(ε) = (e^ε−1)/(e^ε+m−1)``: GRR on ``[m]`` is ``λ·identity + (1−λ)·uniform``."""
    e = math.exp(epsilon)
    return (e - 1) / (e + m - 1)


def grr_second_round(epsilon_perm: float, epsilon: float, m: int,
                     calibration: str) -> tuple[float, float]:
    """``(p2, q2)`` of the instantaneous GRR on ``[m]`` (SPEC §7, L-GRR).

    ``exact``: ``λ2 = λ_m(ε1)/λ_m(ε∞)`` so the composite is exactly GRR_m(ε1).
    ``paper``: ``p2 = (e^{ε∞+ε1}−1)/((m−1)(e^ε∞−e^ε1)+e^{ε∞+ε1}−1)`` (exact only for m = 2).
    """
    if calibration == "exact":
        lam2 = grr_lambda(epsilon, m) / grr_lambda(epsilon_perm, m)
        return (1 - lam2) / m + lam2, (1 - lam2) / m
    a = math.expm1(epsilon_perm + epsilon)
    p2 = a / ((m - 1) * (math.exp(epsilon_perm) - math.exp(epsilon)) + a)
    return p2, (1 - p2) / (m - 1)


def grr_rounds(epsilon_perm: float, epsilon: float, m: int,
               calibration: str) -> tuple[float, float, float, float]:
    """``(p1, q1, p2, q2)`` of L-GRR on ``[m]``: permanent GRR_m(ε∞), then ``grr_second_round``."""
    e = math.exp(epsilon_perm)
    p1 = e / (e + m - 1)
    return (p1, (1 - p1) / (m - 1), *grr_second_round(epsilon_perm, epsilon, m, calibration))


def grr_chain(p1: float, q1: float, p2: float, q2: float) -> tuple[float, float]:
    """``(p*, q*)``: P(report = x | key x) and P(report = x | key ≠ x) of R2∘R1."""
    return p1 * p2 + (1 - p1) * q2, q1 * p2 + (1 - q1) * q2


def pack_words(packed: np.ndarray, words: int) -> np.ndarray:
    """``uint8[n, b]`` packed bits → ``int64[n, words]`` (zero-padded to ``8·words`` bytes)."""
    n = len(packed)
    buf = np.zeros((n, 8 * words), dtype=np.uint8)
    buf[:, :packed.shape[1]] = packed
    return buf.view("<i8").reshape(n, words).astype(np.int64, copy=False)


def unpack_words(memo: np.ndarray, nbytes: int) -> np.ndarray:
    """Inverse of :func:`pack_words`: ``int64[n, words]`` → ``uint8[n, nbytes]``."""
    memo = np.ascontiguousarray(memo, dtype="<i8")
    return memo.view(np.uint8).reshape(len(memo), -1)[:, :nbytes]


@dataclass(frozen=True)
class BudgetFields:
    """The leading config fields of the memoized protocols: ``k``, ε∞, ε1 and the calibration."""

    k: int
    epsilon_perm: float
    epsilon: float
    calibration: str = "exact"


@dataclass(frozen=True)
class TwoRoundFields(BudgetFields):
    """The fields of the memoized protocols whose two rounds are support channels ``(p1, q1)``
    then ``(p2, q2)`` composing to ``(p, q)`` (L-GRR, L-OSUE, L-SUE), in their config order."""

    p1: float = field(init=False, repr=False)
    q1: float = field(init=False, repr=False)
    p2: float = field(init=False, repr=False)
    q2: float = field(init=False, repr=False)
    p: float = field(init=False, repr=False)
    q: float = field(init=False, repr=False)
    real_epsilon: float = field(init=False, repr=False)
    real_epsilon_perm: float = field(init=False, repr=False)


class Longitudinal:
    """Mixin of the memoized protocols; see the module docstring for the two-round contract.

    Subclasses are frozen dataclasses with fields ``k``, ``epsilon_perm`` (ε∞), ``epsilon`` (ε1)
    and ``calibration``, and set ``real_epsilon`` (the true one-report ε; = ε1 under ``exact``)
    and ``real_epsilon_perm`` (the true ε of the permanent round) in ``__post_init__``.
    """

    longitudinal: ClassVar[bool] = True
    k: int
    epsilon_perm: float
    epsilon: float

    # ----- set-up (``__post_init__``) ------------------------------------------------------------
    def check_budgets(self) -> tuple[float, float]:
        """Validate ``k >= 2`` and ``(ε∞, ε1, calibration)`` (``check_budgets``), store the float
        budgets and return ``(ε∞, ε1)``."""
        name = type(self).__name__
        check_int(name, "k", self.k, 2)
        eps_perm, eps1 = check_budgets(name, self.epsilon_perm, self.epsilon, self.calibration)
        set_fields(self, epsilon_perm=eps_perm, epsilon=eps1)
        return eps_perm, eps1

    def set_rounds(self, p1: float, q1: float, p2: float, q2: float) -> tuple[float, float]:
        """Store both rounds' ``(p1, q1, p2, q2)`` and the composite ``(p, q) = grr_chain(...)``
        (the fields of ``TwoRoundFields``) and return ``(p, q)``."""
        p, q = grr_chain(p1, q1, p2, q2)
        set_fields(self, p1=p1, q1=q1, p2=p2, q2=q2, p=p, q=q)
        return p, q

    # ----- shape of the state ----------------------------------------------------------------------
    @property
    def memo_key_count(self) -> int:
        """Number of distinct memo keys a user can ever use (the budget cap in units of ε∞)."""
        raise NotImplementedError

    @property
    def memo_words(self) -> int:
        """int64 words of one memo entry."""
        return 1

    @property
    def public_width(self) -> int:
        """int64 columns of a user's public state (0: none)."""
        return 0

    @property
    def budget_cap(self) -> float:
        """Most ε a user can ever spend: ``memo_key_count · ε∞``."""
        return self.memo_key_count * self.epsilon_perm

    def draw_public(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Public state of ``n`` new users, ``int64[n, public_width]``."""
        return np.zeros((n, 0), dtype=np.int64)

    def memo_keys(self, items: np.ndarray, public: np.ndarray) -> np.ndarray:
        """Memo key (int64 in ``[0, memo_key_count)``) of each item given its user's public state."""
        return np.asarray(items, dtype=np.int64)

    def permanent(self, keys: np.ndarray, public: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
        """Permanent responses ``int64[n, memo_words]`` for memo keys (ε∞-LDP)."""
        raise NotImplementedError

    def instantaneous(self, memo: np.ndarray, public: np.ndarray,
                      rng: np.random.Generator) -> ReportBatch:
        """One report per memo entry (fresh randomness every call)."""
        raise NotImplementedError

    # ----- stateless paths ---------------------------------------------------------------------------
    def randomize(self, items, rng):
        """One fresh user per report: public state and permanent response drawn, then one report."""
        x = self.check_items(items)
        public = self.draw_public(len(x), rng)
        memo = self.permanent(self.memo_keys(x, public), public, rng)
        return self.instantaneous(memo, public, rng)

    def randomize_permanent(self, items, rng) -> ReportBatch:
        """The round-1 output of fresh users as a batch (values = public state then memo entry),
        for auditing the ε∞ claim; never sent."""
        x = self.check_items(items)
        public = self.draw_public(len(x), rng)
        memo = self.permanent(self.memo_keys(x, public), public, rng)
        n = len(x)
        return ReportBatch(np.zeros(n, np.int64), np.zeros(n, np.int64),
                           np.hstack([public, memo]))

    def longitudinal_diagnostics(self) -> dict[str, Any]:
        return {"epsilon_perm": self.epsilon_perm, "epsilon": self.epsilon,
                "real_epsilon": self.real_epsilon, "budget_cap": self.budget_cap}

    def diagnostics(self) -> dict[str, Any]:
        return self.longitudinal_diagnostics()
