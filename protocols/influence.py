"""How far one hostile report can move an estimate (numpy only; no Beam).

A hostile client may send any report the server *accepts* (well-formed: right fingerprint, block,
seed range, payload length and a payload that decodes), chosen after seeing the data. Its influence
on item x is ``|f̂_x(D ∪ {h}) − f̂_x(D)|`` for the raw estimate of the accepted reports D. Two
functions, for every protocol of the registry:

* :func:`influence_bound` ``(protocol, n_block)`` — an upper bound over **every** dataset D with
  these reports per block and every accepted h. Closed form for the counting protocols, and tight
  (attained when some item's support count is 0 or n, e.g. all reports alike).
* :func:`worst_case_influence` ``(protocol, counts)`` — the exact maximum over all accepted h,
  per item, for the data at hand.

Counting protocols (GRR, SS, OUE, SUE, OLH, PGR): ``f̂_x = (C_x/n − q)/(p − q)`` where one report
adds ``s_x ∈ {0, 1}`` to the support count ``C_x``. Adding it to n reports gives
``Δ_x = (s_x − C_x/n) / ((n+1)(p − q))`` and, since ``C_x/n ∈ [0, 1]``,

    |Δ_x| ≤ 1 / ((n + 1)(p − q))            (PGR: s − r in place of p − q).

Hadamard response: ``f̂_x = scale·H_x/n`` with ``H_x/n ∈ [−1, 1]`` and a report adding
``s_x ∈ {−1, 0, 1}``: ``|Δ_x| ≤ 2·scale/(n + 1)``.

Least-squares decoders (MSS; RAPPOR over its cohorts): ``f̂ = M⁻¹ b`` with
``M = Σ_j w_j A_jᵀA_j + λI``, ``w_j = n_j c_j``, ``b = Σ_j w_j A_jᵀ ĝ_j``, and a report in block j
contributing the debiased vector ``u ∈ {L_j, U_j}^{m_j}`` (U on its subset Z). Adding it changes the
weights as well as the data; exactly (a rank-``m_j`` update, no approximation)

    Δ = c_j M_j'⁻¹ A_jᵀ (u − A_j f̂),   M_j' = M + c_j A_jᵀA_j.

The exact worst case maximises this over the allowed subsets Z (ω_j-subsets for MSS, any bit set
for RAPPOR) per item: a sort per row. The data-free bound uses
``|u_r − (A_j f̂)_r| ≤ max(|L_j|, |U_j|) + ρ_j``, where ``ρ_j² = Σ_i w_i S_i / w_j`` bounds the fitted
block marginals (the weighted fit is a W-norm contraction: ``Σ_i w_i ||A_i f̂||² ≤ Σ_i w_i ||ĝ_i||²``,
and ``S_i`` is the largest ``||ĝ_i||²`` any data can give), so

    |Δ_x| ≤ max_j c_j · ||row_x(M_j'⁻¹ A_jᵀ)||₁ · (max(|L_j|, |U_j|) + ρ_j).

It needs the block counts (public in every summary) and every block non-empty; it is dense (k×k),
for ``k ≤ DENSE_LIMIT``. Like the counting bounds it scales as 1/n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privfreq.protocols.base import Counts, FrequencyProtocol

__all__ = ["DENSE_LIMIT", "influence_bound", "worst_case_influence"]

# The least-squares bounds factor a dense k×k matrix per block: ~1 s at k = 4096.
DENSE_LIMIT = 4096

# Counting protocols: the estimator's denominator p − q (PGR: s − r).
_GAP = {
    "grr": lambda p: p.p - p.q,
    "ss": lambda p: p.ss.p - p.ss.q,
    "oue": lambda p: p.p - p.q,
    "sue": lambda p: p.p - p.q,
    "olh": lambda p: p.p - p.q,
    "pgr": lambda p: p.s - p.r,
}


@dataclass
class _LSBlock:
    a: np.ndarray          # dense A_j, m_j × k
    c: float               # weight per report: w_j = n_j c_j
    low: float             # L_j: debiased value of a bit not in the report's subset
    high: float            # U_j: ... of a bit in it
    subset_size: int | None  # ω_j, or None when any subset is a valid report
    ghat_sq_max: float     # S_j: the largest ||ĝ_j||² any data gives


def _ls_blocks(protocol) -> tuple[list[_LSBlock], float]:
    if protocol.k > DENSE_LIMIT:
        raise ValueError(f"influence: the least-squares bounds are dense; k must be <= "
                         f"{DENSE_LIMIT}, got {protocol.k}")
    items = np.arange(protocol.k)
    out = []
    if protocol.protocol_id == "mss":
        for m, c in zip(protocol.moduli, protocol.blocks):
            a = (items[None, :] % m == np.arange(m)[:, None]).astype(np.float64)
            gap = c.p - c.q
            s_max = (c.omega * (1 - c.q) ** 2 + (c.m - c.omega) * c.q ** 2) / gap ** 2
            out.append(_LSBlock(a, 1.0 / c.variance_n1, -c.q / gap, (1 - c.q) / gap, c.omega,
                                s_max))
        return out, protocol.ridge
    # RAPPOR: cohort c, rows c·b .. c·b + b − 1 of the Bloom design; w_c = N_c.
    gain = (1 - protocol.f) * (protocol.q - protocol.p)
    low, high = -protocol.p_star / gain, (1 - protocol.p_star) / gain
    x = protocol.design.toarray()
    b = protocol.bloom_bits
    for c in range(protocol.cohorts):
        out.append(_LSBlock(x[c * b:(c + 1) * b], 1.0, low, high, None,
                            b * max(low ** 2, high ** 2)))
    return out, 0.0


def _normal_matrix(blocks, n_block, ridge) -> np.ndarray:
    k = blocks[0].a.shape[1]
    m = ridge * np.eye(k)
    for blk, n in zip(blocks, n_block):
        if n > 0:
            m += (n * blk.c) * (blk.a.T @ blk.a)
    return m


def _is_ls(protocol) -> bool:
    return protocol.protocol_id in ("mss", "rappor")


def _check(protocol) -> None:
    if not isinstance(protocol, FrequencyProtocol):
        raise ValueError(f"influence: expected a protocol, got {type(protocol).__name__}")
    if not (_is_ls(protocol) or protocol.protocol_id in _GAP or protocol.protocol_id == "hr"):
        raise ValueError(f"influence: no bound for protocol {protocol.protocol_id!r}")


def influence_bound(protocol, n_block) -> float:
    """Upper bound on ``max_x |f̂_x(D ∪ {h}) − f̂_x(D)|`` over every accepted report h and every
    dataset D with ``n_block`` reports per block (an int for single-block protocols). See the
    module docstring for the formulas."""
    _check(protocol)
    n_block = np.atleast_1d(np.asarray(n_block, dtype=np.int64))
    n = int(n_block.sum())
    if protocol.protocol_id in _GAP:
        return 1.0 / ((n + 1) * _GAP[protocol.protocol_id](protocol))
    if protocol.protocol_id == "hr":
        return 2.0 * protocol.scale / (n + 1)
    blocks, ridge = _ls_blocks(protocol)
    if len(n_block) != len(blocks) or (n_block < 1).any():
        raise ValueError(f"influence_bound({protocol.protocol_id}): n_block must give >= 1 report "
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


def _ls_estimate(blocks, counts: Counts, ridge) -> np.ndarray:
    """The decoder's minimiser, dense (the same normal equations MSS/RAPPOR solve)."""
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


def worst_case_influence(protocol, counts: Counts) -> np.ndarray:
    """Per item x, the exact ``max_h |f̂_x(D ∪ {h}) − f̂_x(D)|`` over every accepted report h, for
    the reports D behind ``counts``. (OLH: over every seed and hashed value.)"""
    _check(protocol)
    n = counts.n
    if protocol.protocol_id in _GAP:
        if n == 0:  # no data: the estimate is 0, and one report gives (s − q)/(p − q)
            q = {"pgr": lambda p: p.r, "ss": lambda p: p.ss.q}.get(
                protocol.protocol_id, lambda p: p.q)(protocol)
            frac = np.full(protocol.k, q)
        else:
            c = (protocol.support_sums(counts) if protocol.protocol_id == "pgr"
                 else np.asarray(counts.counts, dtype=np.float64))
            frac = c / n
        return np.maximum(frac, 1 - frac) / ((n + 1) * _GAP[protocol.protocol_id](protocol))
    if protocol.protocol_id == "hr":
        h = protocol.transformed(counts) / n if n else np.zeros(protocol.k)
        return (1 + np.abs(h)) * protocol.scale / (n + 1)
    blocks, ridge = _ls_blocks(protocol)
    if (counts.n_block < 1).any():
        raise ValueError("worst_case_influence: every block needs >= 1 report")
    f_hat = _ls_estimate(blocks, counts, ridge)
    m = _normal_matrix(blocks, counts.n_block, ridge)
    worst = np.zeros(protocol.k)
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
