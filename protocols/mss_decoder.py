"""The MSS decoder (SPEC §2): per-block debiasing, then the weighted least squares, solved in
closed form (ℓ = 2 forests), directly per item-graph component, or by LSMR on the row-scaled
system applied by structure; standard errors from ``mss_covariance``.
"""
from __future__ import annotations

import math
import time

import numpy as np
from scipy.sparse.linalg import LinearOperator, lsmr

from privfreq.protocols.base import Counts, Estimate
from privfreq.protocols.mss_covariance import covariance_diagonal, covariance_kind, population
from privfreq.protocols.mss_design import Design
from privfreq.protocols.mss_linalg import direct_solve, has_full_column_rank
from privfreq.protocols.postprocess import project_simplex

__all__ = ["DIRECT_WORK", "LSMR_STOP_REASONS", "LSMR_TOL", "decode"]

LSMR_TOL = 1e-10  # atol = btol: relative residual tolerances of LSMR
# decode solves directly per item-graph component when Σ_c |c|³ <= DIRECT_WORK·k: a batched
# s×s solve costs ~s³ flops per component against LSMR's ~2ℓ·iterations (~60-120) flops per item.
DIRECT_WORK = 64

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

