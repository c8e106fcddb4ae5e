"""The MSS design matrix and its structure (SPEC §2).

``A ∈ {0,1}^{T×k}``, ``T = Σ m_j``: block j, row r, column x is ``1[x mod m_j = r]`` (ℓ ones per
column, never dense). With block weights ``w_j`` the normal matrix is ``M = Σ_j w_j A_jᵀA_j``,
``M[x, y] = Σ_j w_j 1[x ≡ y (mod m_j)]``: block diagonal over the connected components of the item
graph, which ``Design`` finds, and for ℓ = 2 forests solvable in closed form (``ForestSolver``).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse as sp

from privfreq.protocols.base import DENSE_LIMIT

__all__ = ["Design", "ForestSolver", "group_systems", "periodic", "residue_sums", "spread_add"]

# Above DENSE_LIMIT items, item-graph components of more than COMPONENT_DENSE_LIMIT items go to
# the stochastic estimators: a dense s×s inverse costs ~s³ (0.05 s at 1024, ~2 s at 4096 here).
COMPONENT_DENSE_LIMIT = 1024
# ℓ = 2 forest designs solve in closed form (``ForestSolver``) when its left inverse has at most
# FOREST_NNZ·k nonzeros (a tree of s >= 2 items costs s(s+1)): a memory cap of ~200 bytes per
# item, about two dozen length-k arrays. The planner's near-k ℓ = 2 designs need ~1·k (k = 22000:
# 2982 items in trees of 6 and 8 items); at 8-11·k (k ~ 10^3, trees of 14-26 items) the closed
# form measured 15-25× faster than LSMR, which such designs used before (direct_work > 64).
FOREST_NNZ = 16


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
                                  group_systems(d, np.ones(2), 0.0, items)])
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



def group_systems(d: Design, w: np.ndarray, ridge: float, items: np.ndarray):
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


