"""Covariance of the MSS estimate against the population's own frequencies (SPEC §2): the SS
noise of every block with its within-block correlations, plus the users' random split among
blocks.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from privfreq.protocols.base import DENSE_LIMIT
from privfreq.protocols.mss_design import Design, group_systems, periodic, residue_sums, spread_add
from privfreq.protocols.mss_linalg import (batched_inverse, dense_inverse, probe_count,
                                           rademacher_probes, solve_many)

__all__ = ["Population", "block_noise", "covariance_diagonal", "covariance_kind",
           "covariance_with_error", "exact_covariance", "population"]


def covariance_kind(d: Design, probes: int | None = None) -> str:
    """How ``covariance_diagonal`` computes: "exact", or how many items are stochastic."""
    big = d.components[1]
    if not big.size:
        return "exact"
    count = probe_count(d.k) if probes is None else probes
    return f"exact on {d.k - big.size} items, stochastic ({count} probes) on {big.size}"


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
    diag, trace_se, ab = _sandwich_diagonal(d, w, ridge, v, f if ridge else None, kappa / n,
                                            probes, np.stack(lowrank_rhs, axis=1))
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
                       c_f: float, probes: int | None,
                       rhs: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """``(diag(S⁻¹ [N − c_f·M diag(f) M] S⁻¹), standard error of its sum, S⁻¹ rhs)`` (see
    ``covariance_with_error``; the f term only when ``f_ridge`` is given). One inverse per
    item-graph component serves both the sandwich and the solves; components of more than
    DENSE_LIMIT items get a stochastic diagonal and CG solves."""
    groups, big = d.components
    tot = float(np.sum(w))
    live = [j for j in range(len(d.moduli)) if w[j] != 0]
    # every item as if a singleton (M_xx = Σ_j w_j), then the larger components overwritten
    diag = sum(periodic(w[j] ** 2 * v[j], d.k) for j in live)
    if f_ridge is not None:
        diag -= c_f * tot * tot * f_ridge
    diag /= (tot + ridge) ** 2
    y = rhs / (tot + ridge)
    for s, items in groups.items():
        if s == 1:
            continue
        cached = d.component_patterns.get(s) if items is groups.get(s) else None
        for rows, m, sm in group_systems(d, w, ridge, items):
            it = items[rows]
            meat = np.zeros_like(m)
            for j in live:
                res = d.rows[j][it] - d.offsets[j]
                same = cached[j][rows] if cached is not None else res[:, :, None] == res[:, None, :]
                meat += (w[j] ** 2 * v[j][res])[:, :, None] * same
            if f_ridge is not None:
                meat -= c_f * (m * f_ridge[it][:, None, :]) @ m
            inv = batched_inverse(sm)   # symmetric: diag(X M X)[a] = Σ_c (X M)[a, c] X[a, c]
            diag[it] = np.einsum("nac,nac->na", inv @ meat, inv)
            y[it] = inv @ rhs[it]
    if not big.size:
        return diag, 0.0, y
    y[big] = solve_many(d, w, ridge, rhs)[big]
    z = np.zeros((d.k, probe_count(d.k) if probes is None else probes))
    z[big] = rademacher_probes(big.size, z.shape[1])
    u = solve_many(d, w, ridge, z)
    u = solve_many(d, w, ridge, _meat_matvec(d, w, v, f_ridge, c_f, u))
    per = z[big] * u[big]
    diag[big] = per.mean(axis=1)
    sums = per.sum(axis=0)
    se = float(sums.std(ddof=1) / math.sqrt(len(sums))) if len(sums) > 1 else math.nan
    return diag, se, y


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
    s_inv = dense_inverse(d.normal_dense(w) + mss.ridge * np.eye(d.k))
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


