"""MSS server-side math: the sparse design matrix, the weighted LSMR decode, and covariances.

``A ∈ {0,1}^{T×k}``, ``T = Σ m_j``: block j, row r, column x is ``1[x mod m_j = r]`` (ℓ ones per
column, never dense). With block weights ``w_j`` the normal matrix is
``M = Σ_j w_j A_jᵀA_j``, ``M[x, y] = Σ_j w_j 1[x ≡ y (mod m_j)]``, and for λ = 0
``Cov(f̂) = M^{-1}`` when each ĝ_j has covariance ``I/w_j``.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, lsmr

from protocols.base import Counts, Estimate

__all__ = [
    "DENSE_LIMIT",
    "Design",
    "covariance_diagonal",
    "decode",
    "exact_covariance",
    "IllConditioned",
    "has_full_column_rank",
    "trace_inverse",
]

# Largest k for which covariances are computed densely: a k×k Cholesky at 4096 takes ~1 s and
# 128 MiB; beyond it, stochastic estimates with CG solves cost O(k·ℓ) per iteration instead.
DENSE_LIMIT = 4096
# Probes of the stochastic (Hutchinson / Bekas) estimators: relative error of the trace is about
# sqrt(2/PROBES)·(off-diagonal mass of M^{-1}), which is small because M is well conditioned.
PROBES = 32
# CG iteration cap for rank/conditioning screens: CG needs about cond(M)^½·ln(2/rtol)/2 iterations,
# i.e. ~70 at cond(A) = 10 and rtol = 1e-6; a design needing more than 150 is rejected.
CG_MAXITER = 150
# Lanczos restarts for extreme eigenvalues; no convergence of the smallest within it is read as
# a (near-)singular matrix, i.e. an unusable design.
EIGSH_MAXITER = 200
LSMR_TOL = 1e-10  # atol = btol: relative residual tolerances of LSMR

LSMR_STOP_REASONS = {
    0: "x = 0 is the exact solution",
    1: "Ax - b small enough (atol/btol)",
    2: "least-squares solution within atol",
    3: "condition number exceeded conlim",
    4: "Ax - b small enough (machine precision)",
    5: "least-squares solution within machine precision",
    6: "condition number exceeded machine precision limit",
    7: "iteration limit reached",
}


class Design:
    """The MSS design matrix for ``(k, moduli)`` in CSR form plus residue-class sizes."""

    def __init__(self, k: int, moduli: tuple[int, ...]):
        self.k = k
        self.moduli = tuple(moduli)
        self.offsets = np.concatenate([[0], np.cumsum(self.moduli)]).astype(np.int64)
        x = np.arange(k, dtype=np.int64)
        # rows[j, x] = offset_j + x mod m_j
        self.rows = np.stack([o + x % m for o, m in zip(self.offsets, self.moduli)])
        self.class_sizes = [np.bincount(x % m, minlength=m) for m in self.moduli]

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def matrix(self, row_scale: np.ndarray | None = None, blocks=None) -> sp.csr_matrix:
        """``diag(row_scale) A`` restricted to ``blocks`` (default: all), as CSR."""
        blocks = range(len(self.moduli)) if blocks is None else list(blocks)
        rows = self.rows[blocks].ravel()
        cols = np.tile(np.arange(self.k), len(blocks))
        data = np.ones(len(rows)) if row_scale is None else row_scale[rows]
        a = sp.csr_matrix((data, (rows, cols)), shape=(self.n_rows, self.k))
        return a

    def normal_matvec(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``M v = Σ_j w_j A_jᵀ(A_j v)``, O(k·ℓ) per vector; ``v`` may be ``[k]`` or ``[k, s]``."""
        out = np.zeros_like(v, dtype=np.float64)
        for j, m in enumerate(self.moduli):
            if w[j] == 0:
                continue
            r = self.rows[j] - self.offsets[j]
            if v.ndim == 1:
                s = np.bincount(r, weights=v, minlength=m)
            else:  # one bincount over (residue, column) pairs
                cols = v.shape[1]
                idx = (r[:, None] * cols + np.arange(cols)).ravel()
                s = np.bincount(idx, weights=v.ravel(), minlength=m * cols).reshape(m, cols)
            out += w[j] * s[r]
        return out

    def normal_dense(self, w: np.ndarray) -> np.ndarray:
        """Dense ``M = Σ_j w_j A_jᵀA_j`` (k <= DENSE_LIMIT)."""
        x = np.arange(self.k)
        out = np.zeros((self.k, self.k))
        for j, m in enumerate(self.moduli):
            out += w[j] * (x[:, None] % m == x[None, :] % m)
        return out

    def normal_diagonal(self, w: np.ndarray) -> np.ndarray:
        """``diag(M)[x] = Σ_j w_j |class of x mod m_j|``."""
        x = np.arange(self.k)
        return sum(w[j] * self.class_sizes[j][x % m] for j, m in enumerate(self.moduli))


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
            _solve_many(d, w, 0.0, _probes(k)[:, :1], maxiter=CG_MAXITER)
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


def _dense_inverse(m: np.ndarray) -> np.ndarray:
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


def _solve_many(d: Design, w: np.ndarray, ridge: float, rhs: np.ndarray,
                maxiter: int | None = None, rtol: float = 1e-8) -> np.ndarray:
    """Solve ``(M + λI) X = rhs`` for all columns at once: Jacobi-preconditioned CG, vectorized
    over columns (each column runs its own CG recurrence; one matmat per iteration).

    CG needs about ``cond(A)·log(1/rtol)`` iterations; ``IllConditioned`` if it does not converge.
    """
    dinv = (1.0 / (d.normal_diagonal(w) + ridge))[:, None]
    b = np.asarray(rhs, dtype=np.float64)
    x = np.zeros_like(b)
    r = b.copy()
    z = dinv * r
    p = z.copy()
    rz = np.sum(r * z, axis=0)
    target = rtol * np.linalg.norm(b, axis=0)
    for _ in range(maxiter or 10 * d.k):
        ap = d.normal_matvec(w, p) + ridge * p
        alpha = rz / np.maximum(np.sum(p * ap, axis=0), np.finfo(float).tiny)
        x += alpha * p
        r -= alpha * ap
        if np.all(np.linalg.norm(r, axis=0) <= target):
            return x
        z = dinv * r
        rz_new = np.sum(r * z, axis=0)
        p = z + (rz_new / np.maximum(rz, np.finfo(float).tiny)) * p
        rz = rz_new
    raise IllConditioned("CG did not converge: A is (nearly) rank-deficient or ill-conditioned")


def _probes(k: int, seed: int = 0) -> np.ndarray:
    """Rademacher probes; fewer for very large k, where the relative error of the trace estimate
    (about sqrt(2/probes)·||offdiag(M^{-1})||_F / tr(M^{-1})) shrinks like 1/sqrt(k) anyway."""
    probes = PROBES if k <= 16384 else PROBES // 4
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(k, probes))


def covariance_diagonal(d: Design, w: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """``diag(Cov f̂)`` with ``Cov = S^{-1} M S^{-1}``, ``S = M + λI`` (= ``M^{-1}`` at λ = 0).

    Exact (dense) for k <= DENSE_LIMIT; otherwise the Bekas et al. estimator
    ``diag ≈ mean_i z_i ⊙ Cov z_i`` over Rademacher probes, with CG solves.
    """
    if d.k <= DENSE_LIMIT:
        m = d.normal_dense(w)
        s_inv = _dense_inverse(m + ridge * np.eye(d.k))
        cov = s_inv if ridge == 0 else s_inv @ m @ s_inv
        return np.diag(cov).copy()
    z = _probes(d.k)
    y = _solve_many(d, w, ridge, z)
    if ridge > 0:
        y = _solve_many(d, w, ridge, d.normal_matvec(w, y))
    return np.maximum((z * y).mean(axis=1), 0.0)


def trace_inverse(d: Design, w: np.ndarray, maxiter: int | None = None) -> float:
    """``tr(M^{-1})``: exact for k <= DENSE_LIMIT, else Hutchinson with Rademacher probes.

    Raises ``IllConditioned`` when M is numerically singular (or CG exceeds ``maxiter``)."""
    if d.k <= DENSE_LIMIT:
        return float(np.trace(_dense_inverse(d.normal_dense(w))))
    z = _probes(d.k)
    _solve_many(d, w, 0.0, z[:, :1], maxiter, rtol=1e-6)  # cheap screen: one probe converges?
    return float(np.sum(z * _solve_many(d, w, 0.0, z, maxiter, rtol=1e-6)) / z.shape[1])


def block_covariance(c, g: np.ndarray) -> np.ndarray:
    """Exact per-report covariance of SS indicator vectors on ``[m]`` when the residue is
    distributed as ``g`` (sums to 1), divided by ``(p−q)²``: n_j·Cov(ĝ_j).

    With ``q1 = p(ω−1)/(m−1)`` (``P(r, s ∈ Z)``, s the true residue) and
    ``q2 = [p(ω−1)(ω−2) + (1−p)ω(ω−1)]/((m−1)(m−2))`` (``P(r, r' ∈ Z)``, both ≠ s):
    ``E[IIᵀ] = q2(11ᵀ−I) + (q1−q2)(g1ᵀ+1gᵀ−2diag g) + diag(q + (p−q)g)`` and
    ``E[I]E[I]ᵀ`` averaged over s is ``q²11ᵀ + q(p−q)(g1ᵀ+1gᵀ) + (p−q)² diag g``.
    """
    m, w, p, q = c.m, c.omega, c.p, c.q
    q1 = p * (w - 1) / (m - 1)
    q2 = (p * (w - 1) * (w - 2) + (1 - p) * w * (w - 1)) / ((m - 1) * (m - 2)) if m > 2 else 0.0
    one = np.ones(m)
    cross = np.outer(g, one) + np.outer(one, g)
    second = q2 * (np.ones((m, m)) - np.eye(m)) + (q1 - q2) * (cross - 2 * np.diag(g)) \
        + np.diag(q + (p - q) * g)
    first = q * q * np.ones((m, m)) + q * (p - q) * cross + (p - q) ** 2 * np.diag(g)
    return (second - first) / (p - q) ** 2


def exact_covariance(mss, n: int, f: np.ndarray) -> np.ndarray:
    """Exact ``Cov(f̂)`` (dense, k <= DENSE_LIMIT) at block sizes ``n_j = n/ℓ``, true frequencies
    ``f``: the sandwich ``S^{-1} (Σ_j w_j² A_jᵀ Cov(ĝ_j) A_j) S^{-1}`` with ``S = M + λI``."""
    d = mss.design
    if d.k > DENSE_LIMIT:
        raise ValueError(f"exact_covariance: k must be <= {DENSE_LIMIT}, got {d.k}")
    f = np.asarray(f, dtype=np.float64)
    w = mss.expected_weights(n)
    nj = n / mss.ell
    s_inv = _dense_inverse(d.normal_dense(w) + mss.ridge * np.eye(d.k))
    meat = np.zeros((d.k, d.k))
    for j, c in enumerate(mss.blocks):
        r = d.rows[j] - d.offsets[j]
        g = np.bincount(r, weights=f, minlength=c.m)
        cov_g = block_covariance(c, g) / nj
        meat += w[j] ** 2 * cov_g[np.ix_(r, r)]
    return s_inv @ meat @ s_inv


def decode(mss, acc: Counts) -> Estimate:
    """Per-block debiasing, then the weighted (ridge) least squares by LSMR (SPEC §2)."""
    t0 = time.perf_counter()
    d = mss.design
    n_block = acc.n_block.astype(np.float64)
    kept = [j for j in range(mss.ell) if n_block[j] > 0]
    dropped = [j for j in range(mss.ell) if n_block[j] == 0]
    k = mss.k
    if not kept:
        return Estimate(np.zeros(k), np.full(k, np.inf),
                        {"n": 0, "blocks_dropped": dropped, "iterations": 0,
                         "stop_reason": "no reports", "decode_seconds": 0.0})
    w = mss.block_weights(n_block)
    ghat = np.zeros(d.n_rows)
    sqrt_w = np.zeros(d.n_rows)
    for j in kept:
        c = mss.blocks[j]
        sl = slice(d.offsets[j], d.offsets[j + 1])
        ghat[sl] = (acc.counts[sl] / n_block[j] - c.q) / (c.p - c.q)
        sqrt_w[sl] = math.sqrt(w[j])
    a = d.matrix(sqrt_w, kept)
    res = lsmr(a, sqrt_w * ghat, damp=math.sqrt(mss.ridge), atol=LSMR_TOL, btol=LSMR_TOL,
               maxiter=max(100, 10 * k))
    f, istop, itn, normr, normar, norma, conda, normx = res
    solve_seconds = time.perf_counter() - t0
    w_kept = np.where(n_block > 0, w, 0.0)
    rank_ok = mss.ridge > 0 or has_full_column_rank(k, tuple(mss.moduli[j] for j in kept))
    stderr = (np.sqrt(covariance_diagonal(d, w_kept, mss.ridge)) if rank_ok
              else np.full(k, np.inf))
    diagnostics = {
        "n": int(acc.n_block.sum()),
        "n_block": acc.n_block.tolist(),
        "blocks_dropped": dropped,
        "full_column_rank": bool(rank_ok),
        "iterations": int(itn),
        "stop_reason": LSMR_STOP_REASONS.get(int(istop), str(istop)),
        "stop_code": int(istop),
        "residual_norm": float(normr),
        "normal_residual_norm": float(normar),
        "condition_estimate": float(conda),
        "solve_seconds": solve_seconds,
        "decode_seconds": time.perf_counter() - t0,
    }
    return Estimate(f, stderr, diagnostics)
