"""The estimator shared by all pure protocols (Wang et al. 2017): ``f̂ = (C/n − q)/(p − q)``."""
from __future__ import annotations

import numpy as np

__all__ = ["debias", "pure_variance"]


def debias(counts: np.ndarray, n: int, p: float, q: float) -> np.ndarray:
    """``(C/n − q)/(p − q)``; all zeros when ``n = 0`` (no information)."""
    if n == 0:
        return np.zeros(counts.shape, dtype=np.float64)
    return (counts / n - q) / (p - q)


def pure_variance(k: int, n: int, p: float, q: float, f: np.ndarray | None = None) -> np.ndarray:
    """Exact per-item variance of :func:`debias` for a pure protocol with support counts.

    ``Var = [q(1−q) + f (p−q)(1−p−q)] / (n (p−q)²)``; ``f=None`` gives the ``f_x = 0`` value.
    With ``n = 0`` the variance is infinite.
    """
    f = np.zeros(k) if f is None else np.asarray(f, dtype=np.float64)
    if n == 0:
        return np.full(k, np.inf)
    return (q * (1 - q) + f * (p - q) * (1 - p - q)) / (n * (p - q) ** 2)
