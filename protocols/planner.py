"""MSS moduli planner (SPEC §2, "Choosing moduli").

Candidates are ℓ distinct primes (hence pairwise coprime) around a target size t, for target sizes
on a geometric grid from the smallest feasible ``⌈(k+ℓ−1)/ℓ⌉`` (the rank condition
``Σ m_j − ℓ + 1 >= k``) up to k, plus seeded random draws in a band around each target. A
candidate survives if its design matrix has full column rank and its condition number is at most
``max_condition``; survivors are ranked by predicted MSE, or, given ``max_mse_factor``, by message
length among those within that factor of SS on [k]. Predicted MSE is n-free: ``n·MSE`` at
``n_j = n/ℓ`` for large n and uniform f (spread-out data), with the whole covariance of SPEC §2 (SS
noise with its within-block correlations, and the users' split among blocks:
``mss_covariance.covariance_with_error``).

Screening uses ``tr(M^{-1})/k`` with ``w_j = 1/(ℓ·q_j(1−q_j)/(p_j−q_j)²)``, the f = 0
privatization part, as a lower bound on that MSE: the whole MSE exceeded it in every design
measured (k = 1024: 1.000–1.05× at ε <= 4, up to 1.65× at ε = 6 for small moduli;
tests/protocols/test_planner_config.py checks it on the planner's own candidates), so a candidate
whose trace is already above the threshold is rejected without the costlier whole MSE.

Cost. Bits are closed-form, so the ``max_bits`` filter and the bits order come first and no solve
is spent on a candidate that cannot be returned. For k <= DENSE_LIMIT every trace is exact (dense).
Above it, a trace costs CG solves (O(k·ℓ) per iteration), and the planner works in two stages:
  1. screen: one Rademacher probe per candidate (Hutchinson; relative error of one probe is about
     sqrt(2)·||offdiag(M^{-1})||_F / tr(M^{-1}), ~1 % at k = 22000, shrinking like 1/√k), with an
     early reject: CG's running lower bound on the probe's quadratic form stops a candidate as soon
     as it is certainly worse than ``screen_margin(k)`` × the threshold (the MSE cap, or the ``top``-th
     best screen value so far). Ill-conditioned candidates (MSE exploding) leave after a few
     iterations instead of CG_MAXITER.
  2. refine: screened candidates in trace order (MSE ranking) while their trace can still beat the
     ``top``-th whole MSE, or lazily the shortest ones (bits order), get the whole MSE
     (``probe_count(k)`` probes on large item-graph components); its standard error relative to
     the estimate is reported as ``mse_rel_error``. Conditioning (Lanczos) is computed only for
     candidates that enter the returned list.
Same seed, same answer: candidate draws and probes are seeded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privfreq.protocols import base, mss_covariance, mss_design, mss_linalg
from privfreq.protocols.base import check_epsilon, check_int
from privfreq.protocols.subset_selection import ss_constants

__all__ = ["Candidate", "best_moduli", "mss_asr", "min_payload_bytes", "plan", "plan_asr",
           "primes_up_to"]

DEFAULT_ELLS = (2, 3, 4)   # the paper's range: ℓ >= 5 needs moduli < k/4·…, ill-conditioned
TARGETS = 10               # geometric grid points between the smallest feasible size and k
DRAWS_PER_TARGET = 2       # seeded random candidates per target, besides the consecutive primes
MAX_CONDITION = 10.0       # the paper's acceptance threshold on cond(W^{1/2} A)
# One Rademacher probe estimates tr(M^{-1}) with relative standard error ≈ SCREEN_SIGMA/sqrt(k)
# (measured ≈ 1 % at k = 22000 over the candidates of ε = 2: screen vs 8-probe values differ by
# 0.1-2 %). A screen value decides alone only when it is more than SCREEN_SIGMAS standard errors
# from the threshold; in between, the candidate is refined with the full probe count.
SCREEN_SIGMA = 1.5
SCREEN_SIGMAS = 10.0


@dataclass(frozen=True)
class Candidate:
    """One moduli choice with its predicted cost and accuracy."""

    moduli: tuple[int, ...]
    ell: int
    bits: float               # ⌈log2 ℓ⌉ + mean_j ⌈log2 C(m_j, ω_j)⌉
    payload_bytes: float      # mean_j wire payload width (protocols.wire encodings)
    predicted_mse_n1: float   # n · MSE (λ = 0, n → ∞, uniform f), whole covariance (SPEC §2)
    mse_ratio_ss: float       # predicted MSE / MSE of SS on [k]
    ss_bits: int              # ⌈log2 C(k, ω)⌉ of SS on [k], for comparison
    condition_number: float   # cond(W^{1/2} A) at n_j = n/ℓ
    mse_rel_error: float = 0.0  # standard error / estimate of predicted_mse_n1 (0: exact)

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


def min_payload_bytes(k: int, epsilon: float, ells=DEFAULT_ELLS) -> float:
    """Lower bound on the mean payload bytes of any feasible MSS design with ℓ in ``ells``, in O(1).

    Each block's payload is at least ``min(m/8, ω) >= m·c − 1`` bytes with ``c = min(1/8,
    1/(e^ε+1))`` (a bitmap or ω indices of >= 1 byte), linear in m, so the mean over blocks is at
    least ``c·mean(m) − 1`` and the rank condition ``Σ m_j >= k + ℓ − 1`` bounds ``mean(m)``.
    Used to refuse a config before the planner runs (23 s at k = 2^20)."""
    c = min(1 / 8, 1 / (math.exp(epsilon) + 1))
    return max(1.0, min(c * (k + ell - 1) / ell - 1 for ell in ells))


def screen_margin(k: int) -> float:
    """Multiplicative margin on one-probe screen values: ``1 + SCREEN_SIGMAS·SCREEN_SIGMA/√k``."""
    return 1.0 + SCREEN_SIGMAS * SCREEN_SIGMA / math.sqrt(k)


def _weights(epsilon: float, moduli: tuple[int, ...]) -> np.ndarray:
    """Block weights at n = 1 (``n_j = 1/ℓ``)."""
    return np.array([1.0 / (len(moduli) * ss_constants(m, epsilon).variance_n1) for m in moduli])


def _describe(k: int, epsilon: float, moduli: tuple[int, ...]):
    """``(bits, payload_bytes)``, closed form; None if the moduli are infeasible for k."""
    if sum(moduli) - len(moduli) + 1 < k or math.prod(moduli) < k:
        return None
    blocks = [ss_constants(m, epsilon) for m in moduli]
    bits = math.ceil(math.log2(len(moduli))) + float(np.mean([_info_bits(c) for c in blocks]))
    return bits, float(np.mean([c.payload_width for c in blocks]))


def _info_bits(c) -> int:
    """``⌈log2 C(m, ω)⌉`` (= ``SSConstants.information_bits``) via lgamma: O(1), where the exact
    binomial costs ~1 s at m = 10^6. lgamma's relative error (~1e-15) puts the log within ~1e-9·x
    bits of the truth, so the ceiling is exact unless x is that close to an integer: then the
    exact binomial decides."""
    if c.m <= 1:
        return 0
    x = (math.lgamma(c.m + 1) - math.lgamma(c.omega + 1) - math.lgamma(c.m - c.omega + 1)) \
        / math.log(2)
    if abs(x - round(x)) < 1e-6 * max(1.0, x / 1e4):
        return c.information_bits
    return math.ceil(x)


def _trace(k: int, epsilon: float, moduli: tuple[int, ...], probes: int | None,
           stop_above: float | None = None):
    """``(tr(M^{-1}), standard error)`` at n = 1, or None if unusable or above ``stop_above``.

    ``probes=1`` is a screen: plain Hutchinson on [k]. Otherwise exact on the small components of
    the item graph and Hutchinson on the rest (``mss_linalg.trace_inverse_estimate``)."""
    try:
        return mss_linalg.trace_inverse_estimate(
            mss_design.Design(k, moduli), _weights(epsilon, moduli), probes=probes,
            maxiter=mss_linalg.CG_MAXITER, stop_above=stop_above,
            components=probes != 1 or k <= base.DENSE_LIMIT)
    except (mss_linalg.IllConditioned, mss_linalg.ExceedsBound):
        return None


def _mse(k: int, epsilon: float, moduli: tuple[int, ...]):
    """``(n·MSE, standard error)`` as n → ∞ at uniform f (module docstring), or None if the
    design is unusable."""
    blocks = tuple(ss_constants(m, epsilon) for m in moduli)
    n_block = np.full(len(moduli), 1.0 / len(moduli))
    pop = mss_covariance.Population(n_block, blocks, np.full(k, 1.0 / k), _weights(epsilon, moduli))
    try:
        diag, err = mss_covariance.covariance_with_error(mss_design.Design(k, moduli), pop)
    except mss_linalg.IllConditioned:
        return None
    return float(diag.mean()), err / k


def _candidate(k, moduli, bits, payload, mse, ss_mse, ss_bits, cond=math.nan) -> Candidate:
    return Candidate(moduli=moduli, ell=len(moduli), bits=bits, payload_bytes=payload,
                     predicted_mse_n1=mse[0], mse_ratio_ss=mse[0] / ss_mse, ss_bits=ss_bits,
                     condition_number=cond,
                     mse_rel_error=(mse[1] / mse[0]) if mse[0] > 0 else math.nan)


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
    ss_bits = _info_bits(ss)
    rng = np.random.default_rng(seed)
    primes = primes_up_to(k + 64)
    seen: set[tuple[int, ...]] = set()
    pool = []                            # (moduli, bits, payload_bytes), feasible, within max_bits
    for ell_ in ells:
        sets = [(k,)] if ell_ == 1 else _candidate_sets(k, ell_, primes, rng)
        for moduli in sets:
            if moduli in seen:
                continue
            seen.add(moduli)
            desc = _describe(k, epsilon, moduli)
            if desc is not None and (max_bits is None or desc[0] <= max_bits):
                pool.append((moduli, *desc))
    exact = k <= base.DENSE_LIMIT

    def conditioned(c: Candidate) -> Candidate | None:
        cond = mss_linalg.condition_number(mss_design.Design(k, c.moduli),
                                            _weights(epsilon, c.moduli))
        return Candidate(**{**c.__dict__, "condition_number": cond}) if cond <= max_condition \
            else None

    ranked: list[Candidate] = []
    margin = 1.0 if exact else screen_margin(k)
    if max_mse_factor is not None:
        # Shortest first; a candidate is evaluated only while it can still enter the top list.
        cap = max_mse_factor * ss_mse                 # on n·MSE
        pool.sort(key=lambda t: (t[1], -sum(t[0]), t[0]))
        for moduli, bits, payload in pool:
            if len(ranked) >= top and bits > ranked[top - 1].bits:
                break
            # the trace screen (one probe above DENSE_LIMIT) rejects what is surely over the cap
            tr = _trace(k, epsilon, moduli, None if exact else 1, margin * cap * k)
            if tr is None or tr[0] > margin * cap * k:
                continue
            mse = _mse(k, epsilon, moduli)
            if mse is None or mse[0] > cap:
                continue
            c = conditioned(_candidate(k, moduli, bits, payload, mse, ss_mse, ss_bits))
            if c is not None:
                ranked.append(c)
                ranked.sort(key=lambda c: (c.bits, c.predicted_mse_n1))
        ranked = ranked[:top]
    else:
        # Largest moduli first: they are usually the most accurate, which tightens the early
        # reject of the rest. Screen everything by trace, then take the whole MSE in trace order
        # while a trace can still beat the top-th whole MSE; condition only what enters the list.
        pool.sort(key=lambda t: (-sum(t[0]), t[0]))
        screened = []                                  # (trace, moduli, bits, payload)
        for moduli, bits, payload in pool:
            bound = None
            if len(screened) >= top:
                bound = margin * sorted(s[0] for s in screened)[top - 1]
            tr = _trace(k, epsilon, moduli, None if exact else 1, bound)
            if tr is not None:
                screened.append((tr[0], moduli, bits, payload))
        screened.sort(key=lambda s: (s[0], s[2]))
        evaluated: list[Candidate] = []
        conditioned_: dict[tuple[int, ...], Candidate | None] = {}
        for trace, moduli, bits, payload in screened:
            if len(ranked) == top and trace > margin * k * ranked[-1].predicted_mse_n1:
                break
            mse = _mse(k, epsilon, moduli)
            if mse is None:
                continue
            evaluated.append(_candidate(k, moduli, bits, payload, mse, ss_mse, ss_bits))
            ranked = []
            for c in sorted(evaluated, key=lambda c: (c.predicted_mse_n1, c.bits)):
                if c.moduli not in conditioned_:   # the costliest figure: only for what we return
                    conditioned_[c.moduli] = conditioned(c)
                if conditioned_[c.moduli] is not None:
                    ranked.append(conditioned_[c.moduli])
                if len(ranked) == top:
                    break
    if not ranked:
        raise ValueError(f"plan: no moduli meet the constraints for k = {k}, epsilon = {epsilon} "
                         f"(ell={ell}, max_mse_factor={max_mse_factor}, max_bits={max_bits})")
    return ranked


def mss_asr(k: int, epsilon: float, moduli) -> float:
    """SPEC §4's ASR of MSS, ``(1/ℓ) Σ_j p_j/(ω_j⌈k/m_j⌉)`` (``ModularSubsetSelection.spec_asr``)."""
    blocks = [ss_constants(m, epsilon) for m in moduli]
    return float(np.mean([c.p / (c.omega * math.ceil(k / c.m)) for c in blocks]))


def plan_asr(k: int, epsilon: float, delta: float = 1.0, top: int = 10, pool: int = 10,
             **kwargs):
    """MSS moduli under the attack-aware objective of SPEC §10: among the planner's ``pool``
    best-MSE candidates, those with predicted MSE <= (1+δ)·(the best one's), ranked by ``mss_asr``
    (then MSE). Returns ``[(Candidate, asr), ...]``.

    Exact over that pool, not over every candidate: evaluating all candidates within the cap (the
    ``max_mse_factor`` path) took 150 s at k = 1024 on the shared 2-core machine and changed nothing
    measured (k = 1024, 22000; ε = 1, 2, 4; δ = 1): MSS's ASR ``≈ p_j/(ω_j⌈k/m_j⌉)`` moves by < 1 %
    across moduli whose MSE stays within 2x, because moduli small enough to enlarge the residue
    classes make the system ill-conditioned first (SPEC §2)."""
    if not (isinstance(delta, (int, float)) and delta >= 0 and math.isfinite(delta)):
        raise ValueError(f"plan_asr: delta must be a finite number >= 0, got {delta!r}")
    within = plan(k, epsilon, top=max(pool, top), **kwargs)
    cap = (1 + delta) * within[0].predicted_mse_n1 * (1 + 1e-12)
    scored = [(c, mss_asr(k, epsilon, c.moduli)) for c in within if c.predicted_mse_n1 <= cap]
    scored.sort(key=lambda t: (t[1], t[0].predicted_mse_n1))
    return scored[:top]


def best_moduli(k: int, epsilon: float, **kwargs) -> tuple[int, ...]:
    """The planner's first choice."""
    return plan(k, epsilon, top=1, **kwargs)[0].moduli
