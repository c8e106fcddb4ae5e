"""Linear algebra on the MSS normal matrix ``M = Σ_j w_j A_jᵀA_j`` (``mss_design.Design``):
rank and conditioning checks, direct per-component and CG solves, exact and Hutchinson traces
of ``M^{-1}``.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from privfreq.protocols.base import DENSE_LIMIT
from privfreq.protocols.mss_design import Design, group_systems

__all__ = ["CG_MAXITER", "ExceedsBound", "IllConditioned", "batched_inverse", "condition_number",
           "dense_inverse", "direct_solve", "exact_inverse_diagonal", "has_full_column_rank",
           "probe_count", "rademacher_probes", "solve", "solve_many", "trace_inverse",
           "trace_inverse_estimate"]

# Probes of the stochastic (Hutchinson / Bekas) estimators: relative error of the trace is about
# sqrt(2/PROBES)·(off-diagonal mass of M^{-1}), which is small because M is well conditioned.
PROBES = 32
# CG iteration cap for rank/conditioning screens: CG needs about cond(M)^½·ln(2/rtol)/2 iterations,
# i.e. ~70 at cond(A) = 10 and rtol = 1e-6; a design needing more than 150 is rejected.
CG_MAXITER = 150
# Lanczos restarts for extreme eigenvalues; no convergence of the smallest within it is read as
# a (near-)singular matrix, i.e. an unusable design.
EIGSH_MAXITER = 200


class IllConditioned(ValueError):
    """The normal matrix is (numerically) singular: A lacks full column rank in practice."""


@functools.lru_cache(maxsize=64)
def has_full_column_rank(k: int, moduli: tuple[int, ...]) -> bool:
    """Whether A has full column rank k (numerically: reciprocal condition of AᵀA > 1e-12).

    Sufficient: two moduli with ``m_a + m_b − 1 >= k`` (their bipartite residue graph on k
    consecutive integers is a forest, so those two blocks alone are independent). Otherwise a
    Cholesky factorisation with LAPACK's condition estimate (k <= DENSE_LIMIT), or a bounded CG
    solve that only converges when ``AᵀA`` is nonsingular and reasonably conditioned.
    """
    mod = sorted(moduli)
    if len(mod) >= 2 and mod[-1] + mod[-2] - 1 >= k:
        return True
    if len(mod) == 1:
        return mod[0] >= k
    d = Design(k, tuple(moduli))
    w = np.ones(len(moduli))
    try:
        if k <= DENSE_LIMIT:
            _dense_cholesky(d.normal_dense(w))
        else:
            solve_many(d, w, 0.0, rademacher_probes(k, 1), maxiter=CG_MAXITER)
    except IllConditioned:
        return False
    return True


def _dense_cholesky(m: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of SPD ``m``; ``IllConditioned`` if singular or rcond < 1e-12."""
    chol, info = scipy.linalg.lapack.dpotrf(m, lower=1)
    if info != 0:
        raise IllConditioned("normal matrix is not positive definite")
    rcond, info = scipy.linalg.lapack.dpocon(chol, np.abs(m).sum(axis=0).max(), uplo="L")
    if info != 0 or rcond < 1e-12:
        raise IllConditioned(f"normal matrix is numerically singular (rcond={rcond:.2e})")
    return chol


def dense_inverse(m: np.ndarray) -> np.ndarray:
    """``m^{-1}`` for SPD ``m`` via Cholesky (LAPACK potri)."""
    chol = _dense_cholesky(m)
    inv, info = scipy.linalg.lapack.dpotri(chol, lower=1)
    if info != 0:
        raise IllConditioned("Cholesky inverse failed")
    return np.tril(inv) + np.tril(inv, -1).T


def _normal_operator(d: Design, w: np.ndarray, ridge: float = 0.0) -> LinearOperator:
    return LinearOperator((d.k, d.k), matvec=lambda v: d.normal_matvec(w, v) + ridge * v,
                          matmat=lambda v: d.normal_matvec(w, v) + ridge * v, dtype=np.float64)


def _extreme_eigenvalue(d: Design, w: np.ndarray, which: str) -> float:
    from scipy.sparse.linalg import eigsh
    from scipy.sparse.linalg import ArpackNoConvergence
    v0 = np.random.default_rng(0).standard_normal(d.k)
    try:  # 1e-3 relative accuracy is plenty for a conditioning figure
        return float(eigsh(_normal_operator(d, w), k=1, which=which, v0=v0, tol=1e-3,
                           maxiter=EIGSH_MAXITER, return_eigenvectors=False)[0])
    except ArpackNoConvergence:
        if which == "SA":  # a slow-converging smallest eigenvalue means a cluster near 0
            return 0.0
        raise


def condition_number(d: Design, w: np.ndarray) -> float:
    """``cond(W^{1/2} A) = sqrt(λmax/λmin)`` of the weighted normal matrix."""
    if d.k <= 1024:  # dense eigenvalues cost k³: fine here, Lanczos is cheaper beyond
        ev = scipy.linalg.eigvalsh(d.normal_dense(w))
        lo, hi = ev[0], ev[-1]
    else:
        lo, hi = _extreme_eigenvalue(d, w, "SA"), _extreme_eigenvalue(d, w, "LA")
    return math.sqrt(hi / lo) if lo > 0 else math.inf


class ExceedsBound(Exception):
    """A CG solve was stopped because its running lower bound on ``Σ_i b_iᵀ M^{-1} b_i`` passed
    the caller's threshold (``lower`` holds the bound reached)."""

    def __init__(self, lower: float):
        super().__init__(f"quadratic form exceeds the bound (>= {lower:.6g})")
        self.lower = lower


def solve_many(d: Design, w: np.ndarray, ridge: float, rhs: np.ndarray,
                maxiter: int | None = None, rtol: float = 1e-8,
                stop_above: float | None = None) -> np.ndarray:
    """Solve ``(M + λI) X = rhs`` for all columns at once: CG preconditioned by the row sums of
    M, vectorized over columns (each column runs its own CG recurrence; one matmat per iteration).

    CG needs about ``cond(A)·log(1/rtol)`` iterations; ``IllConditioned`` if it does not converge.
    With x_0 = 0, ``bᵀx_i = x_iᵀ(M+λI)x_i`` grows monotonically to ``bᵀ(M+λI)^{-1}b`` (CG minimises
    the energy error over growing Krylov spaces), so ``Σ_cols bᵀx_i`` is a running lower bound:
    with ``stop_above`` the solve raises ``ExceedsBound`` as soon as it passes that value.
    """
    dinv = 1.0 / (d.normal_row_sums(w) + ridge)
    b = np.asarray(rhs, dtype=np.float64)
    if b.ndim == 2:
        dinv = dinv[:, None]
    x = np.zeros_like(b)
    r = b.copy()
    z = dinv * r
    p = z.copy()
    rz = np.einsum("i...,i...->...", r, z)
    target = rtol * np.linalg.norm(b, axis=0)
    tiny = np.finfo(float).tiny
    for _ in range(maxiter or 10 * d.k):
        ap = d.normal_matvec(w, p)
        if ridge:
            ap += ridge * p
        alpha = rz / np.maximum(np.einsum("i...,i...->...", p, ap), tiny)
        x += alpha * p
        r -= alpha * ap
        if stop_above is not None:
            lower = float(np.vdot(b, x))
            if lower > stop_above:
                raise ExceedsBound(lower)
        if np.all(np.linalg.norm(r, axis=0) <= target):
            return x
        z = dinv * r
        rz_new = np.einsum("i...,i...->...", r, z)
        p *= rz_new / np.maximum(rz, tiny)
        p += z
        rz = rz_new
    raise IllConditioned("CG did not converge: A is (nearly) rank-deficient or ill-conditioned")


def probe_count(k: int) -> int:
    """Default number of Rademacher probes: PROBES, a quarter of it above 16384 items, where the
    relative error of the trace estimate (about sqrt(2/probes)·||offdiag(M^{-1})||_F / tr(M^{-1}))
    shrinks like 1/sqrt(k) anyway."""
    return PROBES if k <= 16384 else PROBES // 4


def rademacher_probes(k: int, count: int | None = None, seed: int = 0) -> np.ndarray:
    """``float64[k, count]`` Rademacher probes (deterministic for a seed)."""
    count = probe_count(k) if count is None else count
    z = np.random.default_rng(seed).integers(0, 2, size=(k, count)).astype(np.float64)
    return 2.0 * z - 1.0


def _group_inverse_diagonal(d: Design, w: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Exact ``diag(M_c^{-1})`` on ``items`` (``int64[n, s]``, n components of s items each)."""
    n, s = items.shape
    if s == 1:   # singletons: M_xx = Σ_j w_j
        return np.full((n, 1), 1.0 / float(np.sum(w)))
    out = np.empty((n, s))
    for rows, _, m in group_systems(d, w, 0.0, items):
        out[rows] = np.diagonal(batched_inverse(m), axis1=1, axis2=2)
    return out


def direct_solve(d: Design, w: np.ndarray, ridge: float, b: np.ndarray) -> np.ndarray:
    """``(M + λI)^{-1} b`` by batched dense solves per item-graph component (all components must
    have at most DENSE_LIMIT items): exact, no iterations; O(Σ_c |c|³) time."""
    groups, big = d.components
    if big.size:
        raise ValueError("direct_solve: the design has components larger than DENSE_LIMIT")
    x = b / (float(np.sum(w)) + ridge)      # exact on singletons (M_xx = Σ_j w_j)
    for s, items in groups.items():
        if s == 1:
            continue
        for rows, _, sm in group_systems(d, w, ridge, items):
            it = items[rows]
            x[it] = (np.linalg.solve(sm, b[it]) if b.ndim == 2
                     else np.linalg.solve(sm, b[it][..., None])[..., 0])
    return x


def exact_inverse_diagonal(d: Design, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(diag, big)``: ``diag(M^{-1})`` exact on every component of at most DENSE_LIMIT items
    (NaN on ``big``, the items of larger components)."""
    groups, big = d.components
    diag = np.full(d.k, np.nan)
    for items in groups.values():
        diag[items] = _group_inverse_diagonal(d, w, items)
    return diag, big


def trace_inverse_estimate(d: Design, w: np.ndarray, probes: int | None = None,
                           maxiter: int | None = None, rtol: float = 1e-6, seed: int = 0,
                           stop_above: float | None = None,
                           components: bool = True) -> tuple[float, float]:
    """``(estimate, standard error)`` of ``tr(M^{-1})``.

    With ``components`` (default), exact on every item-graph component of at most DENSE_LIMIT
    items (so exact, error 0, for k <= DENSE_LIMIT and for near-k moduli), Hutchinson on the rest;
    without, Hutchinson on all of [k] (cheaper set-up: the planner's one-probe screens). Hutchinson
    uses ``probes`` Rademacher probes (default ``probe_count(k)``); the standard error is the
    sample standard deviation over probes / sqrt(probes) (NaN with one probe).

    The first probe is solved alone as a screen (a rank-deficient or ill-conditioned M fails it
    fast, raising ``IllConditioned``). ``stop_above`` bounds the estimate: as soon as CG's running
    lower bound on it passes the value, ``ExceedsBound`` is raised (an early reject).
    """
    if components:
        diag, big = exact_inverse_diagonal(d, w)
        exact = float(np.nansum(diag))
    else:
        big, exact = np.arange(d.k), 0.0
    if stop_above is not None and exact > stop_above:
        raise ExceedsBound(exact)
    if not big.size:
        return exact, 0.0
    zb = rademacher_probes(big.size, probes if probes is not None else probe_count(d.k), seed)
    count = zb.shape[1]
    z = zb if big.size == d.k else np.zeros((d.k, count))
    if big.size < d.k:
        z[big] = zb
    bound = None if stop_above is None else (stop_above - exact) * count
    first = solve_many(d, w, 0.0, z[:, :1], maxiter, rtol, stop_above=bound)
    per = [float(z[:, 0] @ first[:, 0])]
    if count > 1:
        bound = None if bound is None else bound - per[0]
        rest = solve_many(d, w, 0.0, z[:, 1:], maxiter, rtol, stop_above=bound)
        per += list(np.einsum("ij,ij->j", z[:, 1:], rest))
    per = np.asarray(per)
    err = float(per.std(ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    return exact + float(per.mean()), err


def trace_inverse(d: Design, w: np.ndarray, maxiter: int | None = None,
                  probes: int | None = None) -> float:
    """``tr(M^{-1})``: exact on components of at most DENSE_LIMIT items, Hutchinson on the rest.

    Raises ``IllConditioned`` when M is numerically singular (or CG exceeds ``maxiter``)."""
    return trace_inverse_estimate(d, w, probes, maxiter)[0]


def solve(d: Design, w: np.ndarray, ridge: float, b: np.ndarray) -> np.ndarray:
    """``(M + λI)^{-1} b`` (b: ``[k]`` or ``[k, s]``): per component when all are small, else CG."""
    if d.components[1].size:
        return solve_many(d, w, ridge, b)
    return direct_solve(d, w, ridge, b)


def batched_inverse(sm: np.ndarray) -> np.ndarray:
    """Inverses of SPD matrices ``[n, s, s]``; ``IllConditioned`` when one is (nearly) singular."""
    try:
        chol = np.linalg.cholesky(sm)
    except np.linalg.LinAlgError:
        raise IllConditioned("normal matrix is not positive definite") from None
    piv = np.diagonal(chol, axis1=1, axis2=2) ** 2
    if (piv.min(axis=1) < 1e-12 * piv.max(axis=1)).any():
        raise IllConditioned("normal matrix is numerically singular")
    return np.linalg.inv(sm)


