"""Exact, vectorized samplers and counters for unary-encoding reports (OUE, SUE and every protocol
built on ``protocols.unary_encoding``): k bits, bit x (the user's item) 1 w.p. ``p``, every other bit
independently 1 w.p. ``q``.

Two exact samplers, chosen per (k, q) by the cost model of ``use_sparse`` (constants measured on
the reference machine, numpy 2.4, one core, k = 65 536; benchmarks/results/client.md):

* **sparse** (small q): the ones among the k − 1 non-item positions of an iid Bernoulli(q) sequence
  are the partial sums of iid Geometric(q) gaps, so drawing ``~q·(k−1) + 6 sd`` gaps per row and
  keeping the partial sums below k − 1 gives those ones *exactly*, already sorted and distinct (the
  few rows whose ones outnumber the drawn gaps continue from their last one: the process is
  memoryless). Equivalently: ``B ~ Bin(k−1, q)`` ones, a uniform B-subset. Positions are mapped
  onto ``[k] ∖ {x}`` by ``y + [y >= x]`` and the item's own bit, ``Bernoulli(p)``, is inserted.
  Cost Θ(q·k) per report. Output: sorted int64 keys ``row·k + position`` (CSR order).
* **dense** (large q): packed words of iid Bernoulli(q) bits from random 64-bit words by
  bit-serial comparison of an infinitely precise uniform U with q's (finite) binary expansion:
  bit = [U < q], decided at the first binary digit where U and q differ. Each step costs one
  random word per 64 still-undecided positions; words with no undecided bit are dropped, so a
  chunk needs about ``log2(positions) + leading zeros of q`` steps. Exact for the double q (not
  up to 2^-53 as ``random() < q``). Cost Θ(k/64 · steps) per report.

Counting (the server): keys/indices by one ``bincount`` (Θ(q·k) per report); packed bit rows by a
carry-save adder tree over the packed words of groups of ``TREE_ROWS`` reports (Θ(k/64) word
operations per report, no unpacking), whose bit planes are unpacked once per group.

Truncation (``cap``): the sparse wire encoding has a fixed width of ``cap`` indices, so with a cap
the sampler draws the report *conditioned on at most cap ones* (rows over the cap are redrawn
whole: exact rejection). The number of ones, ``Bin(k−1, q) + Bern(p)``, has the same law whatever
the item, so the conditioning divides every ``P(report | x)`` by the same constant: the
likelihood ratios, hence ε, are unchanged exactly.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["sparse_keys", "dense_words", "use_sparse", "count_words", "count_indices",
           "keys_to_packed", "packed_from_words"]

# Cost model (ns per report), measured at k = 65 536, numpy 2.4, one core, chunks as below:
#   sparse ≈ SPARSE_NS_PER_ONE · (q·k + 6 sd)   (Geometric draw ~8.5 ns, cumsum ~2, extraction,
#            mapping and key arithmetic ~4; OUE ε = 4: 1180 ones, ~19 µs)
#   dense  ≈ DENSE_NS_PER_WORD · k/64 · (leading zero digits of q + DENSE_STEPS)
#            (one random word + ~4 bitwise passes per step ~3.2 ns/word; SUE ε = 4, q = 0.119:
#            3 leading zeros, ~24 µs)
SPARSE_NS_PER_ONE = 16.0
DENSE_NS_PER_WORD = 3.2
DENSE_STEPS = 6.0            # full-width steps after the leading zeros before most words decide
# Temporaries per chunk: 2^21 int64 gaps (16 MiB) for the sparse path, 2^18 words (2 MiB) for the
# dense one (cache-resident across its ~10-20 bitwise passes).
SPARSE_CHUNK_ELEMENTS = 1 << 21
DENSE_CHUNK_WORDS = 1 << 18
SPARSE_EXTRA_SD = 6.0        # gaps drawn per row: mean + 6 sd; P(a row needs more) ~ 1e-9
PACK_CHUNK_BYTES = 1 << 20     # unpacked bytes per chunk in keys_to_packed (cache-resident)
TREE_ROWS = 256              # reports per carry-save group: 9 bit planes per group
_FULL64 = 1 << 64


def use_sparse(k: int, q: float) -> bool:
    """Cost model: sparse pays per one, dense per 64-bit word and comparison step."""
    m = k - 1
    ones = m * q + SPARSE_EXTRA_SD * math.sqrt(m * q * (1 - q)) + 8
    lead = max(0, -math.floor(math.log2(q)) - 1) if q > 0 else 64
    dense = DENSE_NS_PER_WORD * (k / 64) * (lead + DENSE_STEPS)
    return SPARSE_NS_PER_ONE * ones < dense


def _q_digits(q: float) -> list[int]:
    """The binary digits d_1 d_2 ... d_L of the double ``q`` in (0, 1): ``q = Σ d_j 2^-j``."""
    mant, exp = math.frexp(q)              # q = mant·2^exp, mant in [0.5, 1)
    num = int(mant * (1 << 53))            # exact: q = num · 2^(exp − 53)
    length = 53 - exp                      # q = num / 2^length
    while num % 2 == 0:                    # trailing zeros decide nothing (U >= q there: bit 0)
        num //= 2
        length -= 1
    return [(num >> (length - j)) & 1 for j in range(1, length + 1)]


def dense_words(n_words: int, q: float, rng: np.random.Generator) -> np.ndarray:
    """``uint64[n_words]`` of iid Bernoulli(q) bits (exact), by bit-serial comparison with q."""
    digits = _q_digits(q)
    out = np.empty(n_words, dtype=np.uint64)
    for lo in range(0, n_words, DENSE_CHUNK_WORDS):
        size = min(DENSE_CHUNK_WORDS, n_words - lo)
        res = np.zeros(size, dtype=np.uint64)
        und = None                         # undecided bits of the active words (None: all set)
        idx = None                         # active words (None: all of the chunk)
        for d in digits:
            r = rng.integers(0, _FULL64, len(res) if idx is None else len(idx), dtype=np.uint64)
            if d:
                # U's digit 0 < q's 1: decided U < q (bit 1); digit 1: still equal
                if und is None:
                    res |= ~r
                    und = r
                else:
                    won = und & ~r
                    if idx is None:
                        res |= won
                    else:
                        res[idx] |= won
                    und &= r
            else:
                # U's digit 1 > q's 0: decided U > q (bit 0); digit 0: still equal
                if und is None:
                    und = ~r
                else:
                    und &= ~r
            live = und != 0
            n_live = int(np.count_nonzero(live))
            if n_live == 0:
                break
            if n_live * 2 <= len(und):     # drop decided words (compaction)
                idx = np.flatnonzero(live) if idx is None else idx[live]
                und = und[live]
        # positions still undecided after the last digit have U >= q: bit 0 (already)
        out[lo:lo + size] = res
    return out


def packed_from_words(words: np.ndarray, k: int) -> np.ndarray:
    """``uint64[n, ceil(k/64)]`` rows → packed ``uint8[n, ceil(k/8)]`` (LSB first); bits >= k of
    the words must already be zero."""
    n = len(words)
    raw = np.ascontiguousarray(words.astype("<u8", copy=False)).view(np.uint8).reshape(n, -1)
    return raw[:, :(k + 7) // 8] if raw.shape[1] != (k + 7) // 8 else raw


def sparse_keys(x: np.ndarray, k: int, p: float, q: float, rng: np.random.Generator,
                cap: int | None = None) -> np.ndarray:
    """Sorted int64 keys ``row·k + position`` of the ones of ``len(x)`` reports (see module notes).

    ``cap``: rows with more than ``cap`` ones are redrawn whole (the report conditioned on at most
    ``cap`` ones)."""
    n = len(x)
    m = k - 1
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sd = math.sqrt(m * q * (1 - q))
    width = max(1, min(m, int(m * q + SPARSE_EXTRA_SD * sd + 8)))
    step = max(1, SPARSE_CHUNK_ELEMENTS // width)
    parts, extras = [], []
    redo = []
    for lo in range(0, n, step):
        xs = x[lo:lo + step]
        c = len(xs)
        y = rng.geometric(q, (c, width))
        np.cumsum(y, axis=1, out=y)
        y -= 1                                          # positions among the m non-item bits
        inside = y < m
        ones = inside.sum(axis=1)
        more = np.flatnonzero(inside[:, -1])            # the width-th one is still inside
        if len(more):
            last = y[more, -1].copy()
            rows = more
            while len(rows):
                z = rng.geometric(q, (len(rows), width))
                np.cumsum(z, axis=1, out=z)
                z += last[:, None]
                zin = z < m
                r_idx, col = np.nonzero(zin)
                extras.append((lo + rows[r_idx], z[r_idx, col]))
                ones[rows - 0] += zin.sum(axis=1)
                cont = zin[:, -1]
                if cap is not None:
                    cont &= ones[rows] <= cap           # over the cap: rejected anyway
                last = z[cont, -1]
                rows = rows[cont]
        bit = rng.random(c) < p
        ok = np.ones(c, dtype=bool) if cap is None else (ones + bit) <= cap
        if not ok.all():
            redo.append(lo + np.flatnonzero(~ok))
            inside &= ok[:, None]
        pos = y[inside]                                 # row-major: rows in order, sorted
        rows = np.repeat(np.arange(lo, lo + c), inside.sum(axis=1))
        pos += pos >= x[rows]
        rows *= k
        pos += rows
        parts.append(pos)
        hit = np.flatnonzero(bit & ok)
        extras.append((lo + hit, None))
    keys = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if redo:
        redo_rows = np.concatenate(redo)
        bad_mask = np.zeros(n, dtype=bool)
        bad_mask[redo_rows] = True
    else:
        redo_rows, bad_mask = None, None
    add = []
    for rows, pos in extras:
        if pos is None:                                 # the item's own bit
            kv = rows * k + x[rows]
        else:
            pos = pos + (pos >= x[rows])
            kv = rows * k + pos
            if bad_mask is not None:
                kv = kv[~bad_mask[rows]]
        add.append(kv)
    if redo_rows is not None and len(redo_rows):
        sub = sparse_keys(x[redo_rows], k, p, q, rng, cap)
        r = sub // k
        add.append(redo_rows[r] * k + (sub - r * k))
    add = np.concatenate(add) if add else np.zeros(0, dtype=np.int64)
    if len(add):
        add.sort()
        keys = np.insert(keys, np.searchsorted(keys, add), add)
    return keys


def keys_to_packed(keys: np.ndarray, n: int, k: int) -> np.ndarray:
    """Sorted distinct keys ``row·k + position`` → packed ``uint8[n, ceil(k/8)]`` rows (unpacked
    bytes set per chunk of rows, then ``packbits``)."""
    out = np.empty((n, (k + 7) // 8), dtype=np.uint8)
    step = max(1, PACK_CHUNK_BYTES // k)
    bounds = np.searchsorted(keys, np.arange(0, n + step, step) * k)
    for i, lo in enumerate(range(0, n, step)):
        c = min(step, n - lo)
        bits = np.zeros(c * k, dtype=np.uint8)
        bits[keys[bounds[i]:bounds[i + 1]] - lo * k] = 1
        out[lo:lo + c] = np.packbits(bits.reshape(c, k), axis=1, bitorder="little")
    return out


def count_indices(values: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Column counts (int64[k]) of rows of indices, ``counts[i]`` valid then zero padding."""
    total = np.bincount(values.ravel(), minlength=k).astype(np.int64, copy=False)
    total[0] -= values.size - int(counts.sum())
    return total


def _add_planes(a: list, b: list) -> list:
    """Plane-wise (bit-sliced) sum of two multi-bit numbers given as lists of equal-shape arrays."""
    out, carry = [], None
    for pa, pb in zip(a, b):
        s = pa ^ pb
        c = pa & pb
        if carry is not None:
            c |= s & carry
            s ^= carry
        out.append(s)
        carry = c
    out.append(carry)
    return out


def count_words(words: np.ndarray, k: int) -> np.ndarray:
    """Column sums (int64[k]) of ``uint64[n, W]`` bit rows (bit i of word w is column 64w + i):
    a carry-save adder tree over groups of ``TREE_ROWS`` rows, then one unpack per bit plane."""
    n, w = words.shape
    total = np.zeros(64 * w, dtype=np.int64)
    groups = n // TREE_ROWS
    if groups:
        planes = [words[:groups * TREE_ROWS].reshape(groups, TREE_ROWS, w)]
        rows = TREE_ROWS
        while rows > 1:
            half = rows // 2
            a = [pl[:, :half] for pl in planes]
            b = [pl[:, half:] for pl in planes]
            planes = _add_planes(a, b)
            rows = half
        for j, pl in enumerate(planes):
            flat = pl.reshape(groups, w).astype("<u8", copy=False)
            bits = np.unpackbits(flat.view(np.uint8), axis=1, bitorder="little")
            total += bits.sum(axis=0, dtype=np.int64) << j
    rest = words[groups * TREE_ROWS:]
    if len(rest):
        bits = np.unpackbits(rest.astype("<u8", copy=False).view(np.uint8), axis=1,
                             bitorder="little")
        total += bits.sum(axis=0, dtype=np.int64)
    return total[:k]
