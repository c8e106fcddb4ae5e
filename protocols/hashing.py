"""A fast seeded hash family on integers, vectorized in numpy (uint64 arithmetic mod 2^64).

``H_s(v) ∈ [g]`` is SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014) keyed by the seed: the state is ``mix64(s)``, the word for item v is
``mix64(state + (v+1)·γ)`` with ``γ = 0x9E3779B97F4A7C15``, and its high 32 bits are mapped onto
``[g]`` by Lemire's multiply-shift range reduction ``(w_hi · g) >> 32``. ``mix64`` is the
SplitMix64 / Stafford "Mix13" finalizer, a bijection of 64-bit words with full avalanche, so for a
uniform 63-bit seed the family behaves as a random function: ``P_s[H_s(v) = H_s(x)] = 1/g`` for
``v ≠ x`` up to ``O(g/2^32)`` from the range reduction. Cost: about ten uint64 operations per
(seed, item) pair.
"""
from __future__ import annotations

import numpy as np

__all__ = ["hash_to_range", "mix64", "seed_state"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S32 = (np.uint64(s) for s in (30, 27, 31, 32))


def mix64(z: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """SplitMix64 finalizer of a uint64 array, in place (returns ``z``); ``scratch`` (same shape
    and dtype) avoids allocating a temporary per shift."""
    with np.errstate(over="ignore"):
        if scratch is None:
            z ^= z >> _S30
            z *= _M1
            z ^= z >> _S27
            z *= _M2
            z ^= z >> _S31
        else:
            z ^= np.right_shift(z, _S30, out=scratch)
            z *= _M1
            z ^= np.right_shift(z, _S27, out=scratch)
            z *= _M2
            z ^= np.right_shift(z, _S31, out=scratch)
    return z


def seed_state(seeds) -> np.ndarray:
    """Per-seed state ``mix64(s)`` (uint64 array, a fresh copy)."""
    return mix64(np.array(seeds, dtype=np.int64, ndmin=1).astype(np.uint64))


def item_offsets(items) -> np.ndarray:
    """``(v+1)·γ mod 2^64`` per item (uint64 array)."""
    with np.errstate(over="ignore"):
        return (np.array(items, dtype=np.int64, ndmin=1).astype(np.uint64) + np.uint64(1)) * _GAMMA


def hash_to_range(state: np.ndarray, offsets: np.ndarray, g: int,
                  as_int64: bool = True) -> np.ndarray:
    """``H(v) ∈ [g]`` for broadcastable ``state`` (from :func:`seed_state`) and ``offsets`` (from
    :func:`item_offsets`); int64 (or raw uint64) of the broadcast shape. ``g`` must be < 2^32."""
    with np.errstate(over="ignore"):
        z = np.add(state, offsets, dtype=np.uint64)
        mix64(z)
        z >>= _S32
        z *= np.uint64(g)
        z >>= _S32
    return z.astype(np.int64) if as_int64 else z
