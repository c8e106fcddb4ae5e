"""The weighted least-squares decoders (MSS, RAPPOR): one shape for variance and influence.

A decoder of this shape has blocks j (MSS: moduli; RAPPOR: cohorts), each with a 0/1 design
``A_j`` (m_j × k), a per-report weight ``c_j`` (``w_j = n_j c_j``) and debiased per-row values
``ĝ_j = (C_j/n_j − q_j)/(p_j − q_j)``; the estimate is ``f̂ = M⁻¹ b`` with
``M = Σ_j w_j A_jᵀA_j + λI`` and ``b = Σ_j w_j A_jᵀ ĝ_j``.

Influence of one report in block j, contributing the debiased vector ``u ∈ {L_j, U_j}^{m_j}`` (U on
its subset Z): it changes the weights as well as the data; exactly (a rank-``m_j`` update)

    Δ = c_j M_j'⁻¹ A_jᵀ (u − A_j f̂),   M_j' = M + c_j A_jᵀA_j.

The exact worst case maximises this over the allowed subsets Z (ω_j-subsets, or any bit set) per
item: a sort per row. The data-free bound uses ``|u_r − (A_j f̂)_r| ≤ max(|L_j|, |U_j|) + ρ_j``,
where ``ρ_j² = Σ_i w_i S_i / w_j`` bounds the fitted block marginals (the weighted fit is a W-norm
contraction: ``Σ_i w_i ||A_i f̂||² ≤ Σ_i w_i ||ĝ_i||²``, and ``S_i`` is the largest ``||ĝ_i||²``
any data can give), so

    |Δ_x| ≤ max_j c_j · ||row_x(M_j'⁻¹ A_jᵀ)||₁ · (max(|L_j|, |U_j|) + ρ_j).

Both are dense (k×k), for ``k ≤ DENSE_LIMIT``, and need every block non-empty.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from privfreq.protocols.base import DENSE_LIMIT, Counts, FrequencyProtocol

__all__ = ["LSBlock", "LeastSquaresDecoder"]


@dataclass
class LSBlock:
    """One block of a least-squares decoder, dense."""

    a: np.ndarray            # A_j, m_j × k
    c: float                 # weight per report: w_j = n_j c_j
    low: float               # L_j: debiased value of a row not in the report's subset
    high: float              # U_j: ... of a row in it
    subset_size: int | None  # ω_j, or None when any subset is a valid report
    ghat_sq_max: float       # S_j: the largest ||ĝ_j||² any data gives


def _normal_matrix(blocks, n_block, ridge) -> np.ndarray:
    k = blocks[0].a.shape[1]
    m = ridge * np.eye(k)
    for blk, n in zip(blocks, n_block):
        if n > 0:
            m += (n * blk.c) * (blk.a.T @ blk.a)
    return m


def _dense_estimate(blocks, counts: Counts, ridge) -> np.ndarray:
    """The decoder's minimiser, dense (the same normal equations the decoders solve)."""
    k = blocks[0].a.shape[1]
    b = np.zeros(k)
    offset = 0
    for blk, n in zip(blocks, counts.n_block):
        rows = blk.a.shape[0]
        c_j = np.asarray(counts.counts).reshape(-1)[offset:offset + rows]
        offset += rows
        if n > 0:
            ghat = blk.low + (blk.high - blk.low) * (c_j / n)   # = (C/n − q)/(p − q)
            b += (n * blk.c) * (blk.a.T @ ghat)
    return np.linalg.solve(_normal_matrix(blocks, counts.n_block, ridge), b)


class LeastSquaresDecoder(FrequencyProtocol):
    """Base of the protocols decoded by weighted least squares over blocks (module docstring)."""

    @abstractmethod
    def least_squares_blocks(self) -> tuple[list[LSBlock], float]:
        """The dense blocks (k <= DENSE_LIMIT) and the ridge λ."""

    @abstractmethod
    def covariance_diagonal(self, n_block, f) -> np.ndarray:
        """``diag Cov(f̂)`` against the population's frequencies f with ``n_block`` reports per
        block: the report noise plus the users' random split among blocks (SPEC §2)."""

    def variance(self, n, f=None):
        """``covariance_diagonal`` at the expected block sizes ``n/n_blocks``; ``f=None``:
        uniform f (spread-out data)."""
        if n <= 0:
            return np.full(self.k, np.inf)
        f = np.full(self.k, 1.0 / self.k) if f is None else np.asarray(f, dtype=np.float64)
        return self.covariance_diagonal(np.full(self.n_blocks, n / self.n_blocks), f)

    def _dense_blocks(self):
        if self.k > DENSE_LIMIT:
            raise ValueError(f"influence: the least-squares bounds are dense; k must be <= "
                             f"{DENSE_LIMIT}, got {self.k}")
        return self.least_squares_blocks()

    def influence_bound(self, n_block) -> float:
        n_block = np.atleast_1d(np.asarray(n_block, dtype=np.int64))
        blocks, ridge = self._dense_blocks()
        if len(n_block) != len(blocks) or (n_block < 1).any():
            raise ValueError(f"influence_bound({self.protocol_id}): n_block must give >= 1 report "
                             f"for each of the {len(blocks)} blocks, got {n_block.tolist()}")
        m = _normal_matrix(blocks, n_block, ridge)
        w = np.array([n * blk.c for blk, n in zip(blocks, n_block)])
        fit_energy = float(sum(wi * blk.ghat_sq_max for wi, blk in zip(w, blocks)))
        best = 0.0
        for blk, wj in zip(blocks, w):
            r = np.linalg.solve(m + blk.c * (blk.a.T @ blk.a), blk.a.T)    # k × m_j
            rho = math.sqrt(fit_energy / wj)
            best = max(best, blk.c * float(np.abs(r).sum(axis=1).max())
                       * (max(abs(blk.low), abs(blk.high)) + rho))
        return best

    def worst_case_influence(self, counts: Counts) -> np.ndarray:
        blocks, ridge = self._dense_blocks()
        if (counts.n_block < 1).any():
            raise ValueError("worst_case_influence: every block needs >= 1 report")
        f_hat = _dense_estimate(blocks, counts, ridge)
        m = _normal_matrix(blocks, counts.n_block, ridge)
        worst = np.zeros(self.k)
        for blk in blocks:
            r = np.linalg.solve(m + blk.c * (blk.a.T @ blk.a), blk.a.T)    # k × m_j
            base = blk.c * (r @ (blk.low - blk.a @ f_hat))                  # Δ with Z = ∅
            g = blk.c * (blk.high - blk.low) * r                            # + Σ_{r∈Z} g[:, r]
            if blk.subset_size is None:
                top, bottom = np.clip(g, 0, None).sum(axis=1), np.clip(g, None, 0).sum(axis=1)
            else:
                s = np.sort(g, axis=1)
                w = blk.subset_size
                top, bottom = s[:, -w:].sum(axis=1), s[:, :w].sum(axis=1)
            worst = np.maximum(worst, np.maximum(np.abs(base + top), np.abs(base + bottom)))
        return worst
