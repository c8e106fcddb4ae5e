"""MSS server-side math: the sparse design matrix, the weighted LSMR decode, and covariances.

``A ∈ {0,1}^{T×k}``, ``T = Σ m_j``: block j, row r, column x is ``1[x mod m_j = r]`` (ℓ ones per
column, never dense). With block weights ``w_j`` the normal matrix is
``M = Σ_j w_j A_jᵀA_j``, ``M[x, y] = Σ_j w_j 1[x ≡ y (mod m_j)]``, and for λ = 0
``Cov(f̂) = M^{-1}`` when each ĝ_j has covariance ``I/w_j``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, lsmr

from privfreq.protocols.base import DENSE_LIMIT, Counts, Estimate
from privfreq.protocols.postprocess import project_simplex

__all__ = [
    "DENSE_LIMIT",
    "Design",
    "covariance_diagonal",
    "covariance_with_error",
    "Population",
    "population",
    "decode",
    "exact_covariance",
    "ExceedsBound",
    "ForestSolver",
    "probe_count",
    "periodic",
    "residue_sums",
    "spread_add",
    "trace_inverse_estimate",
    "IllConditioned",
    "has_full_column_rank",
    "trace_inverse",
]

# Probes of the stochastic (Hutchinson / Bekas) estimators: relative error of the trace is about
# sqrt(2/PROBES)·(off-diagonal mass of M^{-1}), which is small because M is well conditioned.
PROBES = 32
# CG iteration cap for rank/conditioning screens: CG needs about cond(M)^½·ln(2/rtol)/2 iterations,
# i.e. ~70 at cond(A) = 10 and rtol = 1e-6; a design needing more than 150 is rejected.
CG_MAXITER = 150
# Lanczos restarts for extreme eigenvalues; no convergence of the smallest within it is read as
# a (near-)singular matrix, i.e. an unusable design.
EIGSH_MAXITER = 200
# Above DENSE_LIMIT items, item-graph components of more than COMPONENT_DENSE_LIMIT items go to
# the stochastic estimators: a dense s×s inverse costs ~s³ (0.05 s at 1024, ~2 s at 4096 here).
COMPONENT_DENSE_LIMIT = 1024
LSMR_TOL = 1e-10  # atol = btol: relative residual tolerances of LSMR
# decode solves directly per item-graph component when Σ_c |c|³ <= DIRECT_WORK·k: a batched
# s×s solve costs ~s³ flops per component against LSMR's ~2ℓ·iterations (~60-120) flops per item.
DIRECT_WORK = 64
# ℓ = 2 forest designs solve in closed form (``ForestSolver``) when its left inverse has at most
# FOREST_NNZ·k nonzeros (a tree of s >= 2 items costs s(s+1)): a memory cap of ~200 bytes per
# item, about two dozen length-k arrays. The planner's near-k ℓ = 2 designs need ~1·k (k = 22000:
# 2982 items in trees of 6 and 8 items); at 8-11·k (k ~ 10^3, trees of 14-26 items) the closed
# form measured 15-25× faster than LSMR, which such designs used before (direct_work > 64).
FOREST_NNZ = 16

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


def residue_sums(v: np.ndarray, m: int) -> np.ndarray:
    """``s[r] = Σ_{x ≡ r (mod m)} v[x]`` for ``v`` of shape ``[k]`` or ``[k, s]`` (i.e. ``A_j v``).

    Items ``0..k−1`` fill ``⌊k/m⌋`` whole rows of a ``[⌊k/m⌋, m]`` table plus a partial row, so the
    sum is one contiguous reduction: O(k·s) time, no index arrays, O(m·s) extra memory.
    """
    k = v.shape[0]
    q, rem = divmod(k, m)
    if q:
        s = v[:q * m].reshape((q, m) + v.shape[1:]).sum(axis=0)
    else:
        s = np.zeros((m,) + v.shape[1:])
    if rem:
        s[:rem] += v[q * m:]
    return s


def spread_add(out: np.ndarray, s: np.ndarray, m: int, scale: float = 1.0) -> None:
    """``out[x] += scale · s[x mod m]`` in place (i.e. ``out += scale · A_jᵀ s``), O(k·s)."""
    k = out.shape[0]
    q, rem = divmod(k, m)
    if q:
        out[:q * m].reshape((q, m) + out.shape[1:])[...] += scale * s
    if rem:
        out[q * m:] += scale * s[:rem]


def periodic(s: np.ndarray, k: int, scale: float = 1.0) -> np.ndarray:
    """``scale · A_jᵀ s``, i.e. ``out[x] = scale · s[x mod m]`` for x < k (m = len(s)), float64:
    one broadcast multiply over ``⌊k/m⌋`` rows plus the tail (casting integer counts on the way)."""
    m = s.shape[0]
    q, rem = divmod(k, m)
    out = np.empty(k)
    np.multiply(s, scale, out=out[:q * m].reshape(q, m))
    np.multiply(s[:rem], scale, out=out[q * m:])
    return out


class Design:
    """The MSS design matrix for ``(k, moduli)``, applied by structure, plus residue-class sizes.

    ``A_j v`` is a residue-class sum and ``A_jᵀ u`` a periodic repetition (``residue_sums`` and
    ``spread_add``), so every product costs O(k·ℓ) per vector with contiguous memory access and no
    stored indices; ``matrix()`` builds the explicit CSR form (O(kℓ) memory) only when asked.
    """

    def __init__(self, k: int, moduli: tuple[int, ...]):
        self.k = k
        self.moduli = tuple(int(m) for m in moduli)
        self.offsets = np.concatenate([[0], np.cumsum(self.moduli)]).astype(np.int64)
        # |{x < k : x ≡ r (mod m)}| = ⌊k/m⌋ + [r < k mod m]
        self.class_sizes = [np.full(m, k // m, dtype=np.int64) + (np.arange(m) < k % m)
                            for m in self.moduli]

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """``int64[ℓ, k]``: ``rows[j, x] = offset_j + x mod m_j`` (built on first use)."""
        x = np.arange(self.k, dtype=np.int64)
        return np.stack([o + x % m for o, m in zip(self.offsets, self.moduli)])

    def matrix(self, row_scale: np.ndarray | None = None, blocks=None) -> sp.csr_matrix:
        """``diag(row_scale) A`` restricted to ``blocks`` (default: all), as CSR."""
        blocks = range(len(self.moduli)) if blocks is None else list(blocks)
        rows = self.rows[blocks].ravel()
        cols = np.tile(np.arange(self.k), len(blocks))
        data = np.ones(len(rows)) if row_scale is None else row_scale[rows]
        a = sp.csr_matrix((data, (rows, cols)), shape=(self.n_rows, self.k))
        return a

    @functools.cached_property
    def row_components(self) -> tuple[int, np.ndarray]:
        """``(count, label)``: connected components of the residue graph (vertices: the T rows;
        item x joins its rows ``rows[:, x]``), ``label`` per row. O(kℓ) time and memory."""
        from scipy.sparse.csgraph import connected_components
        r = self.rows
        src = np.broadcast_to(r[0], (len(self.moduli) - 1, self.k)).ravel()
        graph = sp.coo_matrix((np.ones(src.size, dtype=np.int8), (src, r[1:].ravel())),
                              shape=(self.n_rows, self.n_rows))
        return connected_components(graph, directed=False)

    @functools.cached_property
    def forest(self) -> ForestSolver | None:
        """The closed-form solver of ``ForestSolver`` when ℓ = 2, the residue graph is a forest
        (⇔ A has full column rank) and the left inverse fits in FOREST_NNZ·k nonzeros; else None."""
        if len(self.moduli) != 2 or self.components[1].size:
            return None
        if self.k != self.n_rows - self.row_components[0]:   # a cycle: rank-deficient
            return None
        nnz = sum(items.size * (s + 1) for s, items in self.components[0].items() if s >= 2)
        return ForestSolver(self) if nnz <= FOREST_NNZ * self.k else None

    @functools.cached_property
    def components(self) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """Connected components of the item graph (x ~ y iff they share a residue in some block).

        ``M = Σ_j w_j A_jᵀA_j`` is block diagonal over them for every ``w``, so ``M^{-1}`` is the
        inverse of each diagonal block. Returns ``(groups, big)``: ``groups[s]`` is ``int64[n_s, s]``,
        the items of every component of size ``s <= DENSE_LIMIT``; ``big`` the items of larger
        components. Near-k moduli give tiny components (k = 2^20, moduli 977447, 999431: sizes
        <= 8, 86 % singletons); small moduli give one giant component. O(kℓ) time and memory.
        """
        r = self.rows
        label = r[0] if len(self.moduli) == 1 else self.row_components[1][r[0]]
        order = np.argsort(label, kind="stable")
        _, starts, sizes = np.unique(label[order], return_index=True, return_counts=True)
        limit = DENSE_LIMIT if self.k <= DENSE_LIMIT else COMPONENT_DENSE_LIMIT
        groups = {}
        for s in np.unique(sizes[sizes <= limit]):
            st = starts[sizes == s]
            groups[int(s)] = order[st[:, None] + np.arange(s)]
        large = np.nonzero(sizes > limit)[0]
        big = np.sort(np.concatenate([order[starts[i]:starts[i] + sizes[i]] for i in large]
                                     or [np.zeros(0, np.int64)]))
        return groups, big

    @functools.cached_property
    def component_patterns(self) -> dict[int, np.ndarray]:
        """``float64[ℓ, n_s, s, s]`` per component size ``2 <= s``: ``1[x ≡ y (mod m_j)]`` within
        each component (``M_c = Σ_j w_j P_j``), kept only while their total stays <= 8·k·ℓ
        numbers (sizes beyond are rebuilt per call)."""
        out, budget = {}, 8 * self.k * len(self.moduli)
        for s, items in sorted(self.components[0].items()):
            size = len(self.moduli) * items.shape[0] * s * s
            if s == 1 or size > budget:
                continue
            budget -= size
            out[s] = np.stack([(items % m)[:, :, None] == (items % m)[:, None, :]
                               for m in self.moduli]).astype(np.float64)
        return out

    @functools.cached_property
    def direct_work(self) -> float:
        """``Σ_c |c|³ / k`` over item-graph components (inf if one exceeds DENSE_LIMIT): the
        per-item cost of ``direct_solve`` relative to one O(k) pass."""
        groups, big = self.components
        if big.size:
            return math.inf
        return sum(len(items) * s ** 3 for s, items in groups.items()) / self.k

    def forward(self, v: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """``diag(scale_j) A v`` (``scale`` per block; blocks with scale 0 give zero rows)."""
        out = np.zeros((self.n_rows,) + v.shape[1:])
        for j, m in enumerate(self.moduli):
            sj = 1.0 if scale is None else scale[j]
            if sj != 0:
                out[self.offsets[j]:self.offsets[j + 1]] = sj * residue_sums(v, m)
        return out

    def adjoint(self, u: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """``Aᵀ diag(scale_j) u``."""
        out = np.zeros((self.k,) + u.shape[1:])
        for j, m in enumerate(self.moduli):
            sj = 1.0 if scale is None else scale[j]
            if sj != 0:
                spread_add(out, u[self.offsets[j]:self.offsets[j + 1]], m, sj)
        return out

    def normal_matvec(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``M v = Σ_j w_j A_jᵀ(A_j v)``, O(k·ℓ) per vector; ``v`` may be ``[k]`` or ``[k, s]``."""
        v = np.asarray(v, dtype=np.float64)
        out = np.zeros_like(v)
        for j, m in enumerate(self.moduli):
            if w[j] != 0:
                spread_add(out, residue_sums(v, m), m, w[j])
        return out

    def normal_dense(self, w: np.ndarray) -> np.ndarray:
        """Dense ``M = Σ_j w_j A_jᵀA_j`` (k <= DENSE_LIMIT)."""
        x = np.arange(self.k)
        out = np.zeros((self.k, self.k))
        for j, m in enumerate(self.moduli):
            out += w[j] * (x[:, None] % m == x[None, :] % m)
        return out

    def normal_row_sums(self, w: np.ndarray) -> np.ndarray:
        """``(M 1)[x] = Σ_j w_j |class of x mod m_j|`` (the diagonal itself is the constant
        ``Σ_j w_j``); the CG preconditioner."""
        out = np.zeros(self.k)
        for j, m in enumerate(self.moduli):
            if w[j] != 0:
                spread_add(out, self.class_sizes[j].astype(np.float64), m, w[j])
        return out


class ForestSolver:
    """Weighted least squares ``min_f Σ_j w_j ||A_j f − ĝ_j||²`` in closed form for ℓ = 2 designs
    whose residue graph (vertices: the T rows, edges: the items) is a forest.

    On a tree with row sets R0 (block 0) and R1 (block 1) every column of A has one 1 in each, so
    ``range(A) = {u : Σ_{R0} u = Σ_{R1} u}`` (codimension 1: a tree has one vertex more than
    edges), whose W-orthogonal complement is spanned by ``h = W^{-1}(1_{R0} − 1_{R1})``. The
    weighted projection of ĝ onto range(A) is therefore ``Af = ĝ + βh`` with
    ``β = (Σ_{R1} ĝ − Σ_{R0} ĝ)/D``, ``D = |R0|/w_0 + |R1|/w_1``, weighted residual ``β²D``, and
    ``f = L(ĝ + βh)`` for any fixed left inverse L of A (``LA = I``): here the unweighted
    ``L_c = (A_cᵀA_c)^{-1}A_cᵀ`` of each tree of >= 2 items, built once. A single item x (rows a,
    b) is the weighted mean ``f_x = ρ_0ĝ_a + ρ_1ĝ_b = (Aᵀy)_x`` with ``ρ_j = w_j/Σw``,
    ``y_j = ρ_j ĝ_j``, residual ``Σw·ρ_0ρ_1(ĝ_a − ĝ_b)²``; a row without items (residue >= k)
    fits 0 with residual ``w_j ĝ_r²``.

    Per call: a few O(k) passes (``A_jᵀy_j`` as periodic copies of the counts, debias, one sum of
    squares) plus small ops on the rows and items of the larger trees (a bincount for β, one sparse
    product with L); no iterations, no per-call factorisation, nothing of length T.
    """

    def __init__(self, d: Design):
        count, label = d.row_components
        items_in = np.bincount(label[d.rows[0]], minlength=count)
        nodes = np.flatnonzero(items_in[label] >= 2)  # rows of trees with >= 2 items, block 0 first
        _, tree = np.unique(label[nodes], return_inverse=True)
        n_trees = int(tree.max()) + 1 if tree.size else 0
        self.nodes = nodes
        self.n_first = int(np.searchsorted(nodes, d.moduli[0]))
        self.label = tree + n_trees * (nodes >= d.moduli[0])   # tree id, + n_trees in block 1
        sizes = np.bincount(self.label, minlength=2 * n_trees).astype(np.float64)
        self.sizes = sizes[:n_trees], sizes[n_trees:]          # |R0|, |R1| per tree
        column = np.empty(d.n_rows, dtype=np.int64)
        column[nodes] = np.arange(nodes.size)
        groups = [items for s, items in d.components[0].items() if s >= 2]
        self.items = np.concatenate([items.ravel() for items in groups] or [np.zeros(0, np.int64)])
        rows, cols, vals, start = [], [], [], 0
        for items in groups:
            n, s = items.shape
            inv = np.concatenate([np.linalg.inv(m) for _, m, _ in
                                  _group_systems(d, np.ones(2), 0.0, items)])
            row = start + np.arange(n * s).reshape(n, s)
            start += n * s
            for j in range(2):   # L[x_i, row_j(x_l)] += (A_cᵀA_c)^{-1}[i, l]
                rows.append(np.broadcast_to(row[:, :, None], inv.shape).ravel())
                cols.append(np.broadcast_to(column[d.rows[j, items]][:, None, :],
                                            inv.shape).ravel())
                vals.append(inv.ravel())
        self.left_inverse = sp.csr_matrix(
            (np.concatenate(vals or [np.zeros(0)]),
             (np.concatenate(rows or [np.zeros(0, np.int64)]),
              np.concatenate(cols or [np.zeros(0, np.int64)]))),
            shape=(self.items.size, nodes.size))

    def solve(self, d: Design, counts: np.ndarray, scale: np.ndarray, shift: np.ndarray,
              w: np.ndarray) -> tuple[np.ndarray, float]:
        """``(f, ||W^{1/2}(Af − ĝ)||)`` for ``ĝ_j = scale_j·counts_j − shift_j``, ``w > 0``."""
        rho = w / w.sum()
        c0, c1 = counts[:d.moduli[0]], counts[d.moduli[0]:]
        # single items: f = Aᵀy; t = A_1ᵀy_1/ρ_1 − f = ρ_0(ĝ_b − ĝ_a) there (no temporaries)
        f = periodic(c0, d.k, rho[0] * scale[0])
        f -= rho[0] * shift[0]
        t = periodic(c1, d.k, rho[1] * scale[1])
        t -= rho[1] * shift[1]
        f += t
        t *= 1.0 / rho[1]
        t -= f
        tt = t[self.items]
        # trees of >= 2 items: u = ĝ + βh on their rows, f = L u
        u = counts[self.nodes].astype(np.float64)
        for j, part in enumerate((u[:self.n_first], u[self.n_first:])):
            part *= scale[j]
            part -= shift[j]
        n_trees = self.sizes[0].size
        sums = np.bincount(self.label, weights=u, minlength=2 * n_trees)
        den = self.sizes[0] / w[0] + self.sizes[1] / w[1]
        beta = (sums[n_trees:] - sums[:n_trees]) / den
        u += np.concatenate([beta / w[0], beta / -w[1]])[self.label]
        f[self.items] = self.left_inverse @ u
        rr = (np.einsum("i,i->", t, t) - np.einsum("i,i->", tt, tt)) * w.sum() * rho[1] / rho[0]
        rr += np.einsum("i,i,i->", beta, beta, den)
        for j, cj in enumerate((c0, c1)):   # rows without items (residues >= k) fit 0
            g = cj[d.k:] * scale[j] - shift[j]
            rr += w[j] * np.einsum("i,i->", g, g)
        return f, math.sqrt(max(float(rr), 0.0))


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
            _solve_many(d, w, 0.0, _probes(k, 1), maxiter=CG_MAXITER)
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


class ExceedsBound(Exception):
    """A CG solve was stopped because its running lower bound on ``Σ_i b_iᵀ M^{-1} b_i`` passed
    the caller's threshold (``lower`` holds the bound reached)."""

    def __init__(self, lower: float):
        super().__init__(f"quadratic form exceeds the bound (>= {lower:.6g})")
        self.lower = lower


def _solve_many(d: Design, w: np.ndarray, ridge: float, rhs: np.ndarray,
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


def _probes(k: int, count: int | None = None, seed: int = 0) -> np.ndarray:
    """``float64[k, count]`` Rademacher probes (deterministic for a seed)."""
    count = probe_count(k) if count is None else count
    z = np.random.default_rng(seed).integers(0, 2, size=(k, count)).astype(np.float64)
    return 2.0 * z - 1.0


def _group_systems(d: Design, w: np.ndarray, ridge: float, items: np.ndarray):
    """Yield ``(rows, M_c, M_c + λI)`` batches for components ``items`` (``int64[n, s]``, n
    components of s items each), chunked to ~128 MiB of matrices."""
    n, s = items.shape
    cached = d.component_patterns.get(s)
    if cached is not None and items is d.components[0].get(s):
        m = np.tensordot(w, cached, axes=1)
        yield slice(0, n), m, (m + ridge * np.eye(s) if ridge else m)
        return
    chunk = max(1, (1 << 24) // (s * s))
    for a in range(0, n, chunk):
        it = items[a:a + chunk]
        m = np.zeros(it.shape + (s,))
        for j, mod in enumerate(d.moduli):
            if w[j] != 0:
                res = it % mod
                m += w[j] * (res[:, :, None] == res[:, None, :])
        yield slice(a, a + chunk), m, (m + ridge * np.eye(s) if ridge else m)


def _group_inverse_diagonal(d: Design, w: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Exact ``diag(M_c^{-1})`` on ``items`` (``int64[n, s]``, n components of s items each)."""
    n, s = items.shape
    if s == 1:   # singletons: M_xx = Σ_j w_j
        return np.full((n, 1), 1.0 / float(np.sum(w)))
    out = np.empty((n, s))
    for rows, _, m in _group_systems(d, w, 0.0, items):
        out[rows] = np.diagonal(_batched_inverse(m), axis1=1, axis2=2)
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
        for rows, _, sm in _group_systems(d, w, ridge, items):
            it = items[rows]
            x[it] = (np.linalg.solve(sm, b[it]) if b.ndim == 2
                     else np.linalg.solve(sm, b[it][..., None])[..., 0])
    return x


def _exact_part(d: Design, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(diag, big)``: ``diag(M^{-1})`` exact on every component of at most DENSE_LIMIT items
    (NaN on ``big``, the items of larger components)."""
    groups, big = d.components
    diag = np.full(d.k, np.nan)
    for items in groups.values():
        diag[items] = _group_inverse_diagonal(d, w, items)
    return diag, big


def covariance_kind(d: Design, probes: int | None = None) -> str:
    """How ``covariance_diagonal`` computes: "exact", or how many items are stochastic."""
    big = d.components[1]
    if not big.size:
        return "exact"
    count = probe_count(d.k) if probes is None else probes
    return f"exact on {d.k - big.size} items, stochastic ({count} probes) on {big.size}"


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
        diag, big = _exact_part(d, w)
        exact = float(np.nansum(diag))
    else:
        big, exact = np.arange(d.k), 0.0
    if stop_above is not None and exact > stop_above:
        raise ExceedsBound(exact)
    if not big.size:
        return exact, 0.0
    zb = _probes(big.size, probes if probes is not None else probe_count(d.k), seed)
    count = zb.shape[1]
    z = zb if big.size == d.k else np.zeros((d.k, count))
    if big.size < d.k:
        z[big] = zb
    bound = None if stop_above is None else (stop_above - exact) * count
    first = _solve_many(d, w, 0.0, z[:, :1], maxiter, rtol, stop_above=bound)
    per = [float(z[:, 0] @ first[:, 0])]
    if count > 1:
        bound = None if bound is None else bound - per[0]
        rest = _solve_many(d, w, 0.0, z[:, 1:], maxiter, rtol, stop_above=bound)
        per += list(np.einsum("ij,ij->j", z[:, 1:], rest))
    per = np.asarray(per)
    err = float(per.std(ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    return exact + float(per.mean()), err


def trace_inverse(d: Design, w: np.ndarray, maxiter: int | None = None,
                  probes: int | None = None) -> float:
    """``tr(M^{-1})``: exact on components of at most DENSE_LIMIT items, Hutchinson on the rest.

    Raises ``IllConditioned`` when M is numerically singular (or CG exceeds ``maxiter``)."""
    return trace_inverse_estimate(d, w, probes, maxiter)[0]


def block_noise(c, g: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per-report covariance of a block's SS indicator vector on ``[m]``, residues distributed
    as ``g``: ``Σ = diag(dd) + c0·11ᵀ + c1·(g1ᵀ + 1gᵀ)``, returned as ``(dd, c0, c1)``.

    SPEC §2: ``Σ[r,r] = g_r p(1−p) + (1−g_r) q(1−q)`` and, for r ≠ s,
    ``Σ[r,s] = (g_r+g_s)(π_x − pq) + (1−g_r−g_s)(π_o − q²)`` with the pair-inclusion
    probabilities ``π_x = p(ω−1)/(m−1)`` and ``π_o = [p(ω−1)(ω−2) + (1−p)ω(ω−1)]/((m−1)(m−2))``.
    """
    m, w, p, q = c.m, c.omega, c.p, c.q
    pi_x = p * (w - 1) / (m - 1)
    pi_o = (p * (w - 1) * (w - 2) + (1 - p) * w * (w - 1)) / ((m - 1) * (m - 2)) if m > 2 else 0.0
    c0 = pi_o - q * q
    c1 = (pi_x - p * q) - c0
    diag = q * (1 - q) + g * ((p - q) * (1 - p - q))
    return diag - c0 - 2 * c1 * g, c0, c1


@dataclasses.dataclass(frozen=True)
class Population:
    """What the covariance of f̂ depends on besides the design: block sizes ``n_j`` (0: block
    dropped), the SS constants per block, the frequencies ``f`` (sum ~1, entries in [0, 1]) and
    the decoder's weights ``w_j`` and ridge λ."""

    n_block: np.ndarray
    blocks: tuple
    f: np.ndarray
    w: np.ndarray
    ridge: float = 0.0

    @property
    def n(self) -> float:
        return float(np.sum(self.n_block))

    @property
    def kept(self) -> list[int]:
        return [j for j in range(len(self.blocks)) if self.n_block[j] > 0]


def covariance_diagonal(d: Design, pop: Population, probes: int | None = None) -> np.ndarray:
    """``diag Cov(f̂)`` against the population's own frequencies; see ``covariance_with_error``."""
    return covariance_with_error(d, pop, probes)[0]


def covariance_with_error(d: Design, pop: Population,
                          probes: int | None = None) -> tuple[np.ndarray, float]:
    """``(diag Cov(f̂), standard error of its sum)`` against the population's own frequencies
    (SPEC §2), given the block sizes. The error is 0 unless some items are stochastic.

    With ``S = M + λI``, ``L = S⁻¹AᵀW`` and ``B_j = L_jA_j`` (ΣB_j = LA, = I at λ = 0), the
    estimate is ``f̂ − LAf = L(ĝ − h) + Σ_j B_j(φ_j − f)``: ``h_j = A_jφ_j`` are the residue
    frequencies of the ``n_j`` users who drew block j (``φ_j`` their item frequencies). Given the
    ``n_j`` the split is a uniform partition, so with ``Σ_f = diag f − ffᵀ`` and ``κ = n/(n−1)``

        ``Cov = L Σ_priv Lᵀ + κ[Σ_j B_j Σ_f B_jᵀ / n_j − LA Σ_f (LA)ᵀ / n]``,

    ``Σ_priv = blockdiag_j Σ_j(g_j)/(n_j (p_j−q_j)²)`` (``block_noise``; its expectation over the
    split is linear in ``g_j = A_jf``). Writing ``Σ_j`` as diagonal plus rank two and
    ``A_jΣ_fA_jᵀ = diag g_j − g_jg_jᵀ``, the diagonal is

        ``diag(S⁻¹[N − (κ/n)·M diag(f) M]S⁻¹) + Σ_j s_j(c0_j a_j² + 2c1_j a_j b_j)
        − κ Σ_j b_j²/n_j + (κ/n)(Σ_j b_j)²``

    with ``N = Σ_j w_j² A_jᵀ diag(v_j) A_j``, ``v_j = s_j dd_j + κ g_j/n_j``, ``s_j = 1/(n_j
    (p_j−q_j)²)``, ``a_j = L 1_j`` and ``b_j = L g_j`` (2ℓ solves). At λ = 0 the M-term is exactly
    ``−(κ/n)f`` and ``Σ_j b_j = f``. The sandwich is exact per item-graph component of at most
    DENSE_LIMIT items and a Bekas et al. stochastic diagonal on larger ones.
    """
    kept = pop.kept
    n = pop.n
    kappa = n / (n - 1) if n > 1 else 1.0
    w = np.where(pop.n_block > 0, pop.w, 0.0)
    f = np.asarray(pop.f, dtype=np.float64)
    v, lowrank_rhs, coef = [], [], []
    for j, c in enumerate(pop.blocks):
        if j not in kept:
            v.append(np.zeros(c.m))
            continue
        g = np.clip(residue_sums(f, c.m), 0.0, 1.0)
        dd, c0, c1 = block_noise(c, g)
        s = 1.0 / (pop.n_block[j] * (c.p - c.q) ** 2)
        v.append(s * dd + kappa * g / pop.n_block[j])
        lowrank_rhs += [np.full(d.k, w[j]), periodic(g, d.k, w[j])]
        coef.append((s * c0, 2 * s * c1, kappa / pop.n_block[j]))
    ridge = pop.ridge
    diag, trace_se = _sandwich_diagonal(d, w, ridge, v, f if ridge else None, kappa / n, probes)
    ab = solve(d, w, ridge, np.stack(lowrank_rhs, axis=1))
    b_sum = np.zeros(d.k)
    for i, (ca, cab, cb) in enumerate(coef):
        a, b = ab[:, 2 * i], ab[:, 2 * i + 1]
        diag += (ca * a + cab * b) * a - cb * b * b
        b_sum += b
    if ridge:
        diag += (kappa / n) * b_sum * b_sum
    else:
        diag += (kappa / n) * (f * f - f)
    return np.maximum(diag, 0.0), trace_se


def solve(d: Design, w: np.ndarray, ridge: float, b: np.ndarray) -> np.ndarray:
    """``(M + λI)^{-1} b`` (b: ``[k]`` or ``[k, s]``): per component when all are small, else CG."""
    if d.components[1].size:
        return _solve_many(d, w, ridge, b)
    return direct_solve(d, w, ridge, b)


def _meat_matvec(d: Design, w: np.ndarray, v: list[np.ndarray], f_ridge, c_f: float, y):
    """``[N − c_f·M diag(f) M] y`` with ``N = Σ_j w_j² A_jᵀ diag(v_j) A_j`` (f term only with
    ``f_ridge``), by structure."""
    out = np.zeros_like(y)
    for j, m in enumerate(d.moduli):
        if w[j] != 0:
            rs = residue_sums(y, m)
            rs *= (w[j] ** 2 * v[j]).reshape((-1,) + (1,) * (y.ndim - 1))
            spread_add(out, rs, m)
    if f_ridge is not None:
        my = d.normal_matvec(w, y)
        my *= f_ridge.reshape((-1,) + (1,) * (y.ndim - 1))
        out -= c_f * d.normal_matvec(w, my)
    return out


def _sandwich_diagonal(d: Design, w: np.ndarray, ridge: float, v: list[np.ndarray], f_ridge,
                       c_f: float, probes: int | None) -> tuple[np.ndarray, float]:
    """``diag(S⁻¹ [N − c_f·M diag(f) M] S⁻¹)`` (see ``covariance_with_error``; the f term only
    when ``f_ridge`` is given) and the standard error of its sum: batched dense per component,
    stochastic on the large ones."""
    groups, big = d.components
    diag = np.full(d.k, np.nan)
    for s, items in groups.items():
        if s == 1:
            x = items[:, 0]
            tot = float(np.sum(w))
            meat = sum(w[j] ** 2 * v[j][x % m] for j, m in enumerate(d.moduli) if w[j] != 0)
            if f_ridge is not None:
                meat = meat - c_f * tot * tot * f_ridge[x]
            diag[x] = meat / (tot + ridge) ** 2
            continue
        for rows, m, sm in _group_systems(d, w, ridge, items):
            it = items[rows]
            meat = np.zeros_like(m)
            for j, mod in enumerate(d.moduli):
                if w[j] != 0:
                    res = it % mod
                    meat += (w[j] ** 2 * v[j][res])[:, :, None] * (res[:, :, None] == res[:, None, :])
            if f_ridge is not None:
                meat -= c_f * (m * f_ridge[it][:, None, :]) @ m
            inv = _batched_inverse(sm)   # symmetric: diag(X M X)[a] = Σ_c (X M)[a, c] X[a, c]
            diag[it] = np.einsum("nac,nac->na", inv @ meat, inv)
    if big.size:
        z = np.zeros((d.k, probe_count(d.k) if probes is None else probes))
        z[big] = _probes(big.size, z.shape[1])
        y = _solve_many(d, w, ridge, z)
        y = _solve_many(d, w, ridge, _meat_matvec(d, w, v, f_ridge, c_f, y))
        per = z[big] * y[big]
        diag[big] = per.mean(axis=1)
        sums = per.sum(axis=0)
        return diag, float(sums.std(ddof=1) / math.sqrt(len(sums))) if len(sums) > 1 else math.nan
    return diag, 0.0


def _batched_inverse(sm: np.ndarray) -> np.ndarray:
    """Inverses of SPD matrices ``[n, s, s]``; ``IllConditioned`` when one is (nearly) singular."""
    try:
        chol = np.linalg.cholesky(sm)
    except np.linalg.LinAlgError:
        raise IllConditioned("normal matrix is not positive definite") from None
    piv = np.diagonal(chol, axis1=1, axis2=2) ** 2
    if (piv.min(axis=1) < 1e-12 * piv.max(axis=1)).any():
        raise IllConditioned("normal matrix is numerically singular")
    return np.linalg.inv(sm)


def population(mss, n_block, f) -> Population:
    """``Population`` of an MSS protocol at block sizes ``n_block`` and frequencies ``f``."""
    n_block = np.asarray(n_block, dtype=np.float64)
    return Population(n_block, mss.blocks, np.asarray(f, dtype=np.float64),
                      mss.block_weights(n_block), mss.ridge)


def exact_covariance(mss, n: int, f: np.ndarray) -> np.ndarray:
    """Dense ``Cov(f̂)`` (k <= DENSE_LIMIT) at ``n_j = n/ℓ``: the formula of
    ``covariance_diagonal`` assembled as k×k matrices, a reference for its structured diagonal."""
    d = mss.design
    if d.k > DENSE_LIMIT:
        raise ValueError(f"exact_covariance: k must be <= {DENSE_LIMIT}, got {d.k}")
    f = np.asarray(f, dtype=np.float64)
    nj = n / mss.ell
    kappa = n / (n - 1)
    w = mss.expected_weights(n)
    s_inv = _dense_inverse(d.normal_dense(w) + mss.ridge * np.eye(d.k))
    sig_f = np.diag(f) - np.outer(f, f)
    cov = np.zeros((d.k, d.k))
    la = np.zeros((d.k, d.k))
    for j, c in enumerate(mss.blocks):
        a = np.zeros((c.m, d.k))
        a[d.rows[j] - d.offsets[j], np.arange(d.k)] = 1.0
        lj = w[j] * s_inv @ a.T                      # L_j = S⁻¹A_jᵀw_j
        g = np.clip(a @ f, 0, 1)
        dd, c0, c1 = block_noise(c, g)
        sigma = np.diag(dd) + c0 + c1 * (g[:, None] + g[None, :])
        bj = lj @ a
        cov += lj @ sigma @ lj.T / (nj * (c.p - c.q) ** 2) + kappa * bj @ sig_f @ bj.T / nj
        la += bj
    return cov - kappa * la @ sig_f @ la.T / n


def _weighted_operator(d: Design, sqrt_w: np.ndarray, col_scale: np.ndarray | None):
    """``W^{1/2} A diag(col_scale)`` as a LinearOperator (block-structured products, O(kℓ))."""
    def matvec(z):
        z = np.ravel(z)
        return d.forward(z if col_scale is None else col_scale * z, sqrt_w)

    def rmatvec(u):
        out = d.adjoint(np.ravel(u), sqrt_w)
        return out if col_scale is None else col_scale * out
    return LinearOperator((d.n_rows, d.k), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)


def decode(mss, acc: Counts, stderr: bool = True, solver: str = "auto") -> Estimate:
    """Per-block debiasing, then the weighted (ridge) least squares by LSMR (SPEC §2).

    Solver: with both blocks of an ℓ = 2 design filled, λ = 0 and a residue graph that is a
    forest (``Design.forest``, e.g. every ℓ = 2 near-k design), "auto" and "direct" use the closed
    form of ``ForestSolver`` (exact; ``normal_residual_norm`` is 0 by construction). Otherwise M is
    block diagonal over the item-graph components (``Design.components``): when they are all small
    (``Design.direct_work <= DIRECT_WORK``) and A has full column rank, ``solver="auto"`` solves
    the normal equations per component directly. Both are exact with ``iterations = 0``,
    ``stop_code = -1``, ``solver = "direct"``; otherwise, or with ``solver="lsmr"``, LSMR runs
    on ``W^{1/2} A`` applied by structure (O(kℓ) per iteration, no matrix stored). At λ = 0 the
    columns are scaled by ``(M1)^{-1/2}`` (row sums of M; a right preconditioner, same minimiser,
    fewer iterations). ``stderr=False`` skips the per-item standard errors (then NaN). They are
    the square roots of ``covariance_diagonal`` at the realised block sizes with the plug-in
    frequencies ``clip(f̂, 0, 1)`` (SS noise and the users' split among blocks): exact per
    item-graph component, stochastic only on components of more than DENSE_LIMIT items (CG
    solves), which then dominate the decode time.
    """
    if solver not in ("auto", "lsmr", "direct"):
        raise ValueError(f"decode: solver must be 'auto', 'lsmr' or 'direct', got {solver!r}")
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
    w_kept = np.where(n_block > 0, w, 0.0)
    # ĝ_j = scale_j·C_j − shift_j: C_j/n_j debiased by the SS constants
    scale = np.array([1.0 / (n_block[j] * (c.p - c.q)) if n_block[j] > 0 else 0.0
                      for j, c in enumerate(mss.blocks)])
    shift = np.array([c.q / (c.p - c.q) for c in mss.blocks])
    rank_ok = mss.ridge > 0 or has_full_column_rank(k, tuple(mss.moduli[j] for j in kept))
    forest = (d.forest if solver != "lsmr" and mss.ridge == 0 and len(kept) == 2 == mss.ell
              else None)
    use_direct = forest is not None or solver == "direct" or (
        solver == "auto" and rank_ok and d.direct_work <= DIRECT_WORK)
    if forest is not None:   # closed form per residue-graph tree: exact, no iterations
        f, normr = forest.solve(d, acc.counts, scale, shift, w)
        istop, itn, conda, normar = -1, 0, math.nan, 0.0   # AᵀW r = 0 by construction
    else:
        sqrt_w = np.sqrt(w_kept)
        ghat = np.zeros(d.n_rows)
        for j in kept:   # W^{1/2} ĝ, in place
            out = ghat[d.offsets[j]:d.offsets[j + 1]]
            np.multiply(acc.counts[d.offsets[j]:d.offsets[j + 1]], scale[j], out=out)
            out -= shift[j]
            out *= sqrt_w[j]
        if use_direct:
            # Normal equations per component: exact minimiser, no iterations.
            f = direct_solve(d, w_kept, mss.ridge, d.adjoint(ghat, sqrt_w))
            resid = d.forward(f, sqrt_w)
            resid -= ghat
            istop, itn, conda = -1, 0, math.nan
            normr = math.sqrt(float(resid @ resid) + mss.ridge * float(f @ f))
            normar = float(np.linalg.norm(d.adjoint(resid, sqrt_w) + mss.ridge * f))
        else:
            col_scale = None if mss.ridge > 0 else 1.0 / np.sqrt(d.normal_row_sums(w_kept))
            res = lsmr(_weighted_operator(d, sqrt_w, col_scale), ghat,
                       damp=math.sqrt(mss.ridge), atol=LSMR_TOL, btol=LSMR_TOL,
                       maxiter=max(100, 10 * k))
            f, istop, itn, normr, normar, norma, conda, normx = res
            if col_scale is not None:
                f = col_scale * f
    solve_seconds = time.perf_counter() - t0
    if stderr:
        plug_in = population(mss, n_block, project_simplex(f))
        se = np.sqrt(covariance_diagonal(d, plug_in)) if rank_ok else np.full(k, np.inf)
        se_kind = covariance_kind(d) if rank_ok else "rank-deficient"
    else:
        se = np.full(k, np.nan)
        se_kind = "skipped"
    diagnostics = {
        "n": int(acc.n_block.sum()),
        "n_block": acc.n_block.tolist(),
        "blocks_dropped": dropped,
        "full_column_rank": bool(rank_ok),
        "iterations": int(itn),
        "solver": "direct" if use_direct else "lsmr",
        "stop_reason": ("closed form per residue-graph tree (exact)" if forest is not None
                        else "direct solve per item-graph component (exact)" if use_direct
                        else LSMR_STOP_REASONS.get(int(istop), str(istop))),
        "stop_code": int(istop),
        "residual_norm": float(normr),
        "normal_residual_norm": float(normar),
        "condition_estimate": float(conda),
        "stderr": se_kind,
        "solve_seconds": solve_seconds,
        "decode_seconds": time.perf_counter() - t0,
    }
    return Estimate(f, se, diagnostics)
