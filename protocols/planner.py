"""MSS moduli planner (SPEC §2, "Choosing moduli").

Candidates are ℓ distinct primes (hence pairwise coprime) around a target size t, for target sizes
on a geometric grid from the smallest feasible ``⌈(k+ℓ−1)/ℓ⌉`` (the rank condition
``Σ m_j − ℓ + 1 >= k``) up to k, plus seeded random draws in a band around each target. A
candidate survives if its design matrix has full column rank and its condition number is at most
``max_condition``; survivors are ranked by predicted MSE, or, given ``max_mse_factor``, by message
length among those within that factor of SS on [k]. Predicted MSE is n-free: ``n·MSE`` with
``n_j = n/ℓ``, i.e. ``tr(M^{-1})/k`` for ``w_j = 1/(ℓ·q_j(1−q_j)/(p_j−q_j)²)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from protocols import mss_decoder
from protocols.base import check_epsilon, check_int
from protocols.subset_selection import ss_constants

__all__ = ["Candidate", "best_moduli", "plan", "primes_up_to"]

DEFAULT_ELLS = (2, 3, 4)   # the paper's range: ℓ >= 5 needs moduli < k/4·…, ill-conditioned
TARGETS = 10               # geometric grid points between the smallest feasible size and k
DRAWS_PER_TARGET = 2       # seeded random candidates per target, besides the consecutive primes
MAX_CONDITION = 10.0       # the paper's acceptance threshold on cond(W^{1/2} A)


@dataclass(frozen=True)
class Candidate:
    """One moduli choice with its predicted cost and accuracy."""

    moduli: tuple[int, ...]
    ell: int
    bits: float               # ⌈log2 ℓ⌉ + mean_j ⌈log2 C(m_j, ω_j)⌉
    payload_bytes: float      # mean_j wire payload width (protocols.wire encodings)
    predicted_mse_n1: float   # n · MSE (λ = 0)
    mse_ratio_ss: float       # predicted MSE / MSE of SS on [k]
    ss_bits: int              # ⌈log2 C(k, ω)⌉ of SS on [k], for comparison
    condition_number: float   # cond(W^{1/2} A) at n_j = n/ℓ

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["moduli"] = list(self.moduli)
        return d


def primes_up_to(n: int) -> np.ndarray:
    """All primes <= n (sieve of Eratosthenes)."""
    sieve = np.ones(n + 1, dtype=bool)
    sieve[:2] = False
    for p in range(2, int(n ** 0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = False
    return np.nonzero(sieve)[0]


def _candidate_sets(k: int, ell: int, primes: np.ndarray, rng: np.random.Generator):
    lo = math.ceil((k + ell - 1) / ell)
    if lo > k:
        return
    targets = np.unique(np.rint(np.geomspace(lo, k, TARGETS)).astype(int))
    usable = primes[primes <= k]
    for t in targets:
        # ℓ consecutive primes: the smallest ones >= t, shifted down if they run past k.
        i = min(int(np.searchsorted(usable, t)), len(usable) - ell)
        if i >= 0:
            yield tuple(int(p) for p in usable[i:i + ell])
        # Seeded draws in the band [t, 1.25 t] (clipped to k).
        band = usable[(usable >= t) & (usable <= min(k, 1.25 * t))]
        if len(band) >= ell:
            for _ in range(DRAWS_PER_TARGET):
                yield tuple(sorted(int(p) for p in rng.choice(band, ell, replace=False)))


def _evaluate(k: int, epsilon: float, moduli: tuple[int, ...], ss_mse: float, ss_bits: int):
    """Predicted cost and accuracy of one moduli set, or None if it is unusable."""
    if sum(moduli) - len(moduli) + 1 < k or math.prod(moduli) < k:
        return None
    blocks = [ss_constants(m, epsilon) for m in moduli]
    w = np.array([1.0 / (len(moduli) * c.variance_n1) for c in blocks])  # n = 1
    try:
        mse = mss_decoder.trace_inverse(mss_decoder.Design(k, moduli), w,
                                        maxiter=mss_decoder.CG_MAXITER) / k
    except mss_decoder.IllConditioned:
        return None
    bits = math.ceil(math.log2(len(moduli))) + float(np.mean([c.information_bits for c in blocks]))
    return Candidate(moduli=moduli, ell=len(moduli), bits=bits,
                     payload_bytes=float(np.mean([c.payload_width for c in blocks])),
                     predicted_mse_n1=mse, mse_ratio_ss=mse / ss_mse, ss_bits=ss_bits,
                     condition_number=math.nan)


def plan(k: int, epsilon: float, ell: int | None = None, max_mse_factor: float | None = None,
         max_bits: float | None = None, seed: int = 0, top: int = 10,
         max_condition: float = MAX_CONDITION) -> list[Candidate]:
    """Ranked MSS moduli candidates for universe size ``k`` at budget ``epsilon``.

    Args:
      ell: number of moduli; default tries each of DEFAULT_ELLS.
      max_mse_factor: keep candidates with predicted MSE <= factor × SS's, rank by bits.
      max_bits: keep candidates with at most this many information bits, rank by MSE.
      seed: seed of the random draws (same seed, same answer).
      top: how many candidates to return.
    Raises:
      ValueError: on bad arguments, or when no candidate meets the constraints.
    """
    k = check_int("plan", "k", k, 2, 2**31)
    epsilon = check_epsilon("plan", epsilon)
    ells = DEFAULT_ELLS if ell is None else (check_int("plan", "ell", ell, 1, 16),)
    if max_mse_factor is not None and not max_mse_factor >= 1:
        raise ValueError(f"plan: max_mse_factor must be >= 1, got {max_mse_factor!r}")
    top = check_int("plan", "top", top, 1)
    ss = ss_constants(k, epsilon)
    ss_mse = ss.variance_n1
    rng = np.random.default_rng(seed)
    primes = primes_up_to(k + 64)
    seen: set[tuple[int, ...]] = set()
    found: list[Candidate] = []
    for ell_ in ells:
        sets = [(k,)] if ell_ == 1 else _candidate_sets(k, ell_, primes, rng)
        for moduli in sets:
            if moduli in seen:
                continue
            seen.add(moduli)
            c = _evaluate(k, epsilon, moduli, ss_mse, ss.information_bits)
            if c is not None and (max_bits is None or c.bits <= max_bits) and (
                    max_mse_factor is None or c.mse_ratio_ss <= max_mse_factor):
                found.append(c)
    if max_mse_factor is not None:
        found.sort(key=lambda c: (c.bits, c.predicted_mse_n1))
    else:
        found.sort(key=lambda c: (c.predicted_mse_n1, c.bits))
    ranked = []
    for c in found:  # conditioning is the costliest figure: compute it only for what we return
        blocks = [ss_constants(m, epsilon) for m in c.moduli]
        w = np.array([1.0 / (c.ell * b.variance_n1) for b in blocks])
        cond = mss_decoder.condition_number(mss_decoder.Design(k, c.moduli), w)
        if cond <= max_condition:
            ranked.append(Candidate(**{**c.__dict__, "condition_number": cond}))
        if len(ranked) == top:
            break
    if not ranked:
        raise ValueError(f"plan: no moduli meet the constraints for k = {k}, epsilon = {epsilon} "
                         f"(ell={ell}, max_mse_factor={max_mse_factor}, max_bits={max_bits})")
    return ranked


def best_moduli(k: int, epsilon: float, **kwargs) -> tuple[int, ...]:
    """The planner's first choice."""
    return plan(k, epsilon, top=1, **kwargs)[0].moduli
