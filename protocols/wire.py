"""Compact fixed-width payload encodings shared by the protocols, all vectorized over reports.

Two encodings of a value, or of a set of values, from a domain ``[m]``:

* **indices**: ``w`` sorted values, each as an unsigned little-endian integer of the smallest
  width in {1, 2, 4} bytes that holds ``m - 1``; ``w·width`` bytes.
* **bitmap**: an ``m``-bit membership vector, bit ``r`` is bit ``r % 8`` (LSB first) of byte
  ``r // 8``; ``ceil(m/8)`` bytes; the unused high bits of the last byte must be zero.

A protocol picks, per block, whichever is shorter (``subset_encoding``).
"""
from __future__ import annotations

import numpy as np

from protocols.base import Reason

__all__ = [
    "decode_bitmap",
    "decode_indices",
    "encode_bitmap",
    "encode_indices",
    "index_width",
    "subset_encoding",
]


def index_width(m: int) -> int:
    """Bytes per index for a domain of size ``m``."""
    if m <= 1 << 8:
        return 1
    if m <= 1 << 16:
        return 2
    if m <= 1 << 32:
        return 4
    raise ValueError(f"domain size must be <= 2**32, got {m}")


def subset_encoding(m: int, w: int) -> str:
    """``"indices"`` or ``"bitmap"``: the shorter encoding of a ``w``-subset of ``[m]``."""
    return "indices" if w * index_width(m) <= (m + 7) // 8 else "bitmap"


def _le_dtype(m: int) -> np.dtype:
    return np.dtype({1: "u1", 2: "<u2", 4: "<u4"}[index_width(m)])


def encode_indices(values: np.ndarray, m: int) -> np.ndarray:
    """``int[n, w]`` with entries in ``[0, m)`` → ``uint8[n, w·width]``."""
    values = np.asarray(values)
    n = values.shape[0]
    return np.ascontiguousarray(values.astype(_le_dtype(m))).view(np.uint8).reshape(n, -1)


def decode_indices(raw: np.ndarray, m: int, w: int, distinct: bool) -> tuple[np.ndarray, np.ndarray]:
    """``uint8[n, w·width]`` → (``int64[n, w]``, reason per row).

    Rejects values ``>= m`` and, when ``distinct``, repeated values within a row. Returned rows are
    sorted when ``distinct``.
    """
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    n = raw.shape[0]
    values = raw.view(_le_dtype(m)).reshape(n, w).astype(np.int64)
    reason = np.zeros(n, dtype=np.int64)
    reason[(values >= m).any(axis=1)] = Reason.VALUE_OUT_OF_RANGE
    if distinct and w > 1:
        values.sort(axis=1)
        dup = (np.diff(values, axis=1) == 0).any(axis=1)
        reason[dup & (reason == Reason.OK)] = Reason.DUPLICATE_VALUE
    return values, reason


def encode_bitmap(values: np.ndarray, m: int) -> np.ndarray:
    """``int[n, w]`` subsets of ``[m]`` (entries < 0 are padding, ignored) → ``uint8[n, ceil(m/8)]``."""
    values = np.asarray(values)
    n = values.shape[0]
    bits = np.zeros((n, m), dtype=np.uint8)
    rows = np.broadcast_to(np.arange(n)[:, None], values.shape)
    keep = values >= 0
    bits[rows[keep], values[keep]] = 1
    return np.packbits(bits, axis=1, bitorder="little")


def decode_bitmap(raw: np.ndarray, m: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``uint8[n, ceil(m/8)]`` → (sorted ``int64[n, w]`` members, reason per row).

    A row must have exactly ``w`` set bits among the first ``m`` and zero padding bits.
    """
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    n = raw.shape[0]
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    reason = np.zeros(n, dtype=np.int64)
    reason[bits[:, m:].any(axis=1)] = Reason.BAD_PADDING
    bits = bits[:, :m]
    ones = bits.sum(axis=1, dtype=np.int64)
    reason[(ones != w) & (reason == Reason.OK)] = Reason.BAD_LENGTH
    values = np.zeros((n, w), dtype=np.int64)
    good = reason == Reason.OK
    if good.any():
        rr, cc = np.nonzero(bits[good])
        values[good] = cc.reshape(-1, w)
    return values, reason
