"""Optional post-processing of a raw frequency estimate (numpy only).

The raw estimate of every protocol is unbiased but may be negative and need not sum to 1. These
named options turn it into a probability vector; none of them is ever applied by default, and
``PostProcess.RAW`` returns the estimate unchanged.

* ``CLIP_NORMALIZE``: ``max(f̂, 0) / Σ max(f̂, 0)`` (uniform if nothing is positive). Biased; not
  guaranteed to lower the MSE (renormalising can scale the noise up), so the evaluation measures it.
* ``NORM_SUB``: Norm-Sub of Wang, Lopuhaä-Zwakenberg, Li, Skoric, Li, "Locally Differentially
  Private Frequency Estimation with Consistency" (NDSS 2020): ``f' = max(f̂ − δ, 0)`` with δ chosen
  so that ``Σ f' = 1``. Computed with the paper's iterative rule (subtract the mean excess from the
  current support, drop the entries that went non-positive, repeat), at most k rounds of O(k).
* ``SIMPLEX_PROJECTION``: the Euclidean projection onto the probability simplex,
  ``argmin_{p ∈ Δ} ||p − f̂||₂``, by the sort-based O(k log k) algorithm of Duchi, Shalev-Shwartz,
  Singer, Chandra, "Efficient Projections onto the l1-Ball for Learning in High Dimensions" (ICML
  2008). Because the true f lies in the simplex and projection onto a convex set is non-expansive,
  its squared error is never larger than the raw estimate's.

Note: the KKT conditions of the projection give exactly ``max(f̂ − θ, 0)`` with ``Σ = 1``, so
Norm-Sub and the simplex projection have the same minimiser; they are kept as two named options
because the literature names both and the two algorithms cross-check each other (tested to 1e-12).
"""
from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "PostProcess",
    "apply",
    "clip_normalize",
    "norm_sub",
    "project_simplex",
]


class PostProcess(enum.Enum):
    """Post-processing options. Values are stable names (used in results files)."""

    RAW = "raw"
    CLIP_NORMALIZE = "clip_normalize"
    NORM_SUB = "norm_sub"
    SIMPLEX_PROJECTION = "simplex_projection"

    @classmethod
    def parse(cls, name: "str | PostProcess") -> "PostProcess":
        if isinstance(name, cls):
            return name
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"PostProcess: unknown option {name!r}; valid are "
                             f"{[m.value for m in cls]}") from None


def _as_vector(f) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 1 or f.size == 0:
        raise ValueError(f"post-processing: expected a non-empty 1-D estimate, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("post-processing: the estimate contains NaN or infinite values")
    return f


def clip_normalize(f) -> np.ndarray:
    """``max(f, 0)`` rescaled to sum to 1; the uniform vector if no entry is positive."""
    f = _as_vector(f)
    pos = np.maximum(f, 0.0)
    s = pos.sum()
    if s <= 0:
        return np.full(f.shape, 1.0 / f.size)
    return pos / s


def norm_sub(f, max_rounds: int | None = None) -> np.ndarray:
    """Norm-Sub (Wang et al. 2020): ``max(f − δ, 0)`` with δ such that the result sums to 1.

    Iteration: on the current support S (initially all items), ``δ = (Σ_S f − 1)/|S|``; items of S
    with ``f − δ <= 0`` leave S; repeat until S is stable. Each round is O(k) and removes at least
    one item unless it is the last, so it ends within k rounds. Entries outside S are 0.
    """
    f = _as_vector(f)
    support = np.ones(f.size, dtype=bool)
    rounds = f.size if max_rounds is None else max_rounds
    delta = 0.0
    for _ in range(rounds + 1):
        delta = (f[support].sum() - 1.0) / support.sum()
        keep = support & (f - delta > 0)
        if keep.sum() == support.sum():
            break
        if not keep.any():  # cannot happen for exact arithmetic (the max entry stays); be safe
            keep = f == f.max()
            support = keep
            delta = (f[support].sum() - 1.0) / support.sum()
            break
        support = keep
    out = np.where(support, f - delta, 0.0)
    return np.maximum(out, 0.0)


def project_simplex(f) -> np.ndarray:
    """Euclidean projection onto ``{p : p >= 0, Σ p = 1}`` (Duchi et al. 2008), O(k log k).

    Sort descending to ``u``; ``ρ = max{j : u_j − (Σ_{i<=j} u_i − 1)/j > 0}``;
    ``θ = (Σ_{i<=ρ} u_i − 1)/ρ``; result ``max(f − θ, 0)``.
    """
    f = _as_vector(f)
    u = np.sort(f)[::-1]
    css = np.cumsum(u) - 1.0
    j = np.arange(1, f.size + 1)
    rho = np.nonzero(u - css / j > 0)[0][-1]   # index 0 always qualifies: u_1 − (u_1 − 1) = 1 > 0
    theta = css[rho] / (rho + 1)
    return np.maximum(f - theta, 0.0)


_FUNCS = {
    PostProcess.RAW: lambda f: _as_vector(f).copy(),
    PostProcess.CLIP_NORMALIZE: clip_normalize,
    PostProcess.NORM_SUB: norm_sub,
    PostProcess.SIMPLEX_PROJECTION: project_simplex,
}


def apply(f, option: "PostProcess | str") -> np.ndarray:
    """Apply a named post-processing option to a raw estimate (returns a new array)."""
    return _FUNCS[PostProcess.parse(option)](f)
