"""Attack-aware tuning of the refined protocols' knob (SPEC §10), exact over the knob.

For each family the per-user MSE ``q(1−q)/(p−q)²`` (n = 1, f = 0) and the Bayes attacker's success
rate are closed forms of the knob (``curve``), vectorized over it:

| family | knob | range | MSE·n | ASR |
|---|---|---|---|---|
| ass | ω (int) | [1, k−1] | SS's p, q at ω | ``p/ω`` |
| aue | p (real) | [1/2, 1) | ``q = p/(e^ε(1−p)+p)`` | UE's ``p(1−(1−q)^k)/(kq) + (1−p)(1−q)^{k−1}/k`` |
| alh | g (int) | [2, max(k, rint(e^ε+1))] | ``(e^ε−1+g)²/((e^ε−1)²(g−1))`` | ``p·g(1−(1−1/g)^k)/k`` (ideal hash) |
| athe | θ (real) | [1/2, 1] | THE's p, q | as AUE's |

Objectives (``tune``), with ``MSE* = min over the knob`` of the family at (k, ε):
  * ``"asr"``: the lowest ASR with ``MSE <= (1+δ)·MSE*``;
  * ``"weighted"``: the least ``w·ASR/ASR₀ + (1−w)·MSE/MSE*``, ASR₀ the ASR at the MSE-optimal
    knob (both terms are 1 there, so w trades relative changes; the paper's sum mixes raw scales);
  * ``"mse"``: MSE*.
Integer knobs are enumerated (k−1 values at most: 1 M at k = 2^20, ~50 ms). Real knobs: a grid of
GRID points, then every boundary point of the feasible set (``brentq`` on MSE − cap between grid
sign changes, xtol 1e-12) and every grid local minimum refined by a bounded Brent search
(xatol 1e-12): the optimum of a continuous function on the feasible union of intervals is one of
these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from privfreq.protocols.attacks import mask_attack_asr
from privfreq.protocols.base import check_epsilon, check_int

__all__ = ["FAMILIES", "Tuned", "best_mse_knob", "curve", "knob_range", "tune"]

FAMILIES = ("ass", "aue", "alh", "athe")
OBJECTIVES = ("mse", "asr", "weighted")
GRID = 4097              # real knobs: grid points before refinement
_INTEGER = {"ass": True, "alh": True, "aue": False, "athe": False}
AUE_P_MAX = 1 - 1e-9     # p → 1 makes q → 1 and the MSE infinite: the grid stops just short


def knob_range(family: str, k: int, epsilon: float) -> tuple[float, float]:
    """Closed interval of the knob."""
    if family == "ass":
        return 1, k - 1
    if family == "alh":
        from privfreq.protocols.alh import alh_g_max
        return 2, alh_g_max(k, epsilon)
    if family == "aue":
        return 0.5, AUE_P_MAX
    if family == "athe":
        return 0.5, 1.0
    raise ValueError(f"tuning: family must be one of {list(FAMILIES)}, got {family!r}")


def curve(family: str, k: int, epsilon: float, knob) -> tuple[np.ndarray, np.ndarray]:
    """``(n·MSE at f = 0, ASR)`` of ``family`` at each knob value (arrays)."""
    e = math.exp(epsilon)
    x = np.asarray(knob, dtype=np.float64)
    if family == "ass":
        p = x * e / (x * e + k - x)
        q = (x * e * (x - 1) + (k - x) * x) / ((k - 1) * (x * e + k - x))
        asr = p / x
    elif family == "alh":
        p, q = e / (e + x - 1), 1.0 / x
        asr = p * x * -np.expm1(k * np.log1p(-1.0 / x)) / k
    elif family == "aue":
        p = x
        q = x / (e * (1 - x) + x)
        asr = mask_attack_asr(k, p, q)
    elif family == "athe":
        p = 1 - 0.5 * np.exp(epsilon * (x - 1) / 2)
        q = 0.5 * np.exp(-epsilon * x / 2)
        asr = mask_attack_asr(k, p, q)
    else:
        raise ValueError(f"tuning: family must be one of {list(FAMILIES)}, got {family!r}")
    return q * (1 - q) / (p - q) ** 2, asr


@dataclass(frozen=True)
class Tuned:
    """A solved knob with its figures (MSE per user, n = 1)."""

    family: str
    knob: float
    mse_n1: float
    asr: float
    best_mse_n1: float      # MSE* of the family at (k, ε)
    asr_at_best_mse: float  # ASR₀

    @property
    def params(self) -> dict:
        name = {"ass": "omega", "aue": "p_true", "alh": "g", "athe": "theta"}[self.family]
        return {name: int(self.knob) if _INTEGER[self.family] else float(self.knob)}


def _grid(family, k, epsilon):
    lo, hi = knob_range(family, k, epsilon)
    if _INTEGER[family]:
        return np.arange(int(lo), int(hi) + 1, dtype=np.float64)
    return np.linspace(lo, hi, GRID)


def _refine_min(fn, xs, ys, lo, hi):
    """Bounded Brent refinement around each grid local minimum of ``ys``; best (x, y)."""
    best = (xs[int(np.argmin(ys))], float(np.min(ys)))
    loc = np.flatnonzero((ys <= np.roll(ys, 1)) & (ys <= np.roll(ys, -1)))
    for i in loc[:16]:
        a, b = xs[max(0, i - 1)], xs[min(len(xs) - 1, i + 1)]
        if b <= a:
            continue
        r = optimize.minimize_scalar(fn, bounds=(max(lo, a), min(hi, b)), method="bounded",
                                     options={"xatol": 1e-12})
        if r.fun < best[1]:
            best = (float(r.x), float(r.fun))
    return best


def best_mse_knob(family: str, k: int, epsilon: float) -> float:
    """The knob of least MSE (exact over integers; refined to 1e-12 for real knobs)."""
    xs = _grid(family, k, epsilon)
    mse, _ = curve(family, k, epsilon, xs)
    if _INTEGER[family]:
        return float(xs[int(np.argmin(mse))])
    lo, hi = knob_range(family, k, epsilon)
    return _refine_min(lambda x: float(curve(family, k, epsilon, x)[0]), xs, mse, lo, hi)[0]


def tune(family: str, k: int, epsilon: float, objective: str = "asr", delta: float = 1.0,
         weight: float = 0.5) -> Tuned:
    """Solve the knob of ``family`` at (k, ε) for ``objective`` (module docstring).

    Args:
      delta: ``"asr"``: the MSE may exceed the family's best by the factor ``1 + delta``.
      weight: ``"weighted"``: w ∈ [0, 1] on the normalised ASR.
    """
    k = check_int("tune", "k", k, 2)
    epsilon = check_epsilon("tune", epsilon)
    if objective not in OBJECTIVES:
        raise ValueError(f"tune: objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if not (isinstance(delta, (int, float)) and delta >= 0 and math.isfinite(delta)):
        raise ValueError(f"tune: delta must be a finite number >= 0, got {delta!r}")
    if not (isinstance(weight, (int, float)) and 0 <= weight <= 1):
        raise ValueError(f"tune: weight must be in [0, 1], got {weight!r}")
    if family not in FAMILIES:
        raise ValueError(f"tune: family must be one of {list(FAMILIES)}, got {family!r}")
    integer = _INTEGER[family]
    lo, hi = knob_range(family, k, epsilon)
    xs = _grid(family, k, epsilon)
    mse, asr = curve(family, k, epsilon, xs)
    x0 = best_mse_knob(family, k, epsilon)
    mse0, asr0 = (float(v) for v in curve(family, k, epsilon, x0))

    def at(x):
        m, a = curve(family, k, epsilon, x)
        return Tuned(family, float(x), float(m), float(a), mse0, asr0)

    if objective == "mse":
        return at(x0)
    if objective == "weighted":
        score = weight * asr / asr0 + (1 - weight) * mse / mse0
        if integer:
            return at(xs[int(np.argmin(score))])
        fn = lambda x: float(weight * curve(family, k, epsilon, x)[1] / asr0  # noqa: E731
                             + (1 - weight) * curve(family, k, epsilon, x)[0] / mse0)
        return at(_refine_min(fn, xs, score, lo, hi)[0])
    cap = (1 + delta) * mse0
    ok = mse <= cap
    if integer:
        i = np.flatnonzero(ok)
        return at(xs[i[int(np.argmin(asr[i]))]]) if len(i) else at(x0)
    # real knob: candidates are the grid's feasible points, the feasible set's boundary points and
    # refined interior local minima of the ASR
    cands = [x0] + list(xs[ok])
    g = mse - cap
    for i in np.flatnonzero(np.sign(g[:-1]) != np.sign(g[1:])):
        cands.append(optimize.brentq(lambda x: float(curve(family, k, epsilon, x)[0]) - cap,
                                     xs[i], xs[i + 1], xtol=1e-12))
    fa = lambda x: float(curve(family, k, epsilon, x)[1])  # noqa: E731
    masked = np.where(ok, asr, np.inf)
    for i in np.flatnonzero(ok & (masked <= np.roll(masked, 1)) & (masked <= np.roll(masked, -1))):
        a, b = xs[max(0, i - 1)], xs[min(len(xs) - 1, i + 1)]
        if b > a:
            r = optimize.minimize_scalar(fa, bounds=(a, b), method="bounded",
                                         options={"xatol": 1e-12})
            cands.append(float(r.x))
    cands = np.array(cands)
    m_c, a_c = curve(family, k, epsilon, cands)
    feas = m_c <= cap * (1 + 1e-12)
    return at(cands[feas][int(np.argmin(a_c[feas]))])
