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

__all__ = ["MAX_NAME_BYTES", "hash_to_range", "item_id", "mix64", "seed_state"]

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


# ----- names -> 64-bit item ids -------------------------------------------------------------------
# Longest name item_id accepts, in UTF-8 bytes: 255, the DNS limit on a full domain name and the
# usual limit on a file name; it bounds the padded byte matrix of a batch at 256 bytes per name.
MAX_NAME_BYTES = 255
# Default key of item_id (any fixed int64; a collection must use one key for all its clients).
NAME_HASH_KEY = 0x5052495646524551  # "PRIVFREQ"


def _name_bytes(names) -> list[bytes]:
    """UTF-8 bytes of each name; ``ValueError`` for an empty, too long or non-UTF-8 name."""
    out = []
    for i, name in enumerate(names):
        if isinstance(name, (bytes, bytearray, memoryview)):
            b = bytes(name)
            try:
                b.decode("utf-8", errors="strict")
            except UnicodeDecodeError as e:
                raise ValueError(f"item_id: name {i} ({b[:40]!r}) is not valid UTF-8 ({e.reason} "
                                 f"at byte {e.start})") from None
        elif isinstance(name, str):
            try:
                b = name.encode("utf-8", errors="strict")
            except UnicodeEncodeError as e:
                raise ValueError(f"item_id: name {i} ({name[:40]!r}) is not valid UTF-8 "
                                 f"({e.reason} at character {e.start})") from None
        else:
            raise ValueError(f"item_id: names must be str or bytes, got {type(name).__name__} "
                             f"at position {i}")
        if not b:
            raise ValueError(f"item_id: name {i} is empty")
        if len(b) > MAX_NAME_BYTES:
            raise ValueError(f"item_id: name {i} ({b[:40]!r}...) is {len(b)} UTF-8 bytes; the limit "
                             f"is {MAX_NAME_BYTES}")
        out.append(b)
    return out


def item_id(names, key: int = NAME_HASH_KEY) -> np.ndarray:
    """Stable 64-bit ids (int64) of names: a keyed hash of their UTF-8 bytes.

    ``names``: an iterable of ``str`` or ``bytes`` (UTF-8), each non-empty and at most
    ``MAX_NAME_BYTES`` bytes (``ValueError`` naming the position otherwise). The bytes are split
    into little-endian 64-bit words (zero-padded); ``h ← mix64(mix64(key) + len·γ)``, then per word
    ``h ← mix64((h ⊕ word) + (i+1)·γ)`` over the name's own words only, so an id never depends on
    the batch. Vectorized over names (one pass per 8-byte column). Two distinct names collide with
    probability ≈ 2^−64 (≈ 3·10^−8 among 10^6 names); the id is the uint64 hash viewed as int64.
    """
    data = _name_bytes(names)
    n = len(data)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    lengths = np.fromiter(map(len, data), dtype=np.int64, count=n)
    width = int(-(-lengths.max() // 8) * 8)
    buf = np.frombuffer(b"".join(b.ljust(width, b"\0") for b in data), dtype="<u8")
    words = buf.reshape(n, width // 8)
    n_words = -(-lengths // 8)
    with np.errstate(over="ignore"):
        h = seed_state(key)[0] + lengths.astype(np.uint64) * _GAMMA
        mix64(h)
        for c in range(words.shape[1]):
            z = (h ^ words[:, c]) + np.uint64(c + 1) * _GAMMA
            mix64(z)
            h = np.where(c < n_words, z, h)
    return h.view(np.int64)
