"""Exact, vectorized samplers and counters for unary-encoding reports (OUE, SUE and every protocol
built on ``protocols.unary_encoding``): k bits, bit x (the user's item) 1 w.p. ``p``, every other bit
independently 1 w.p. ``q``.

Two exact samplers, chosen per (k, q) by the cost model of ``use_sparse`` (constants measured on
the reference machine, numpy 2.4, one core, k = 65 536; benchmarks/results/client.md):

* **sparse** (small q): the ones among the k − 1 non-item positions of an iid Bernoulli(q) sequence
  are the partial sums of iid Geometric(q) gaps ``1 + ⌊E/λ⌋`` (``E ~ Exp(1)``, ``λ = −log(1−q)``),
  so drawing ``~q·(k−1) + 6 sd`` gaps per row and keeping the partial sums below k − 1 gives those
  ones *exactly*, already sorted and distinct (the few rows whose ones outnumber the drawn gaps
  continue from their last one: the process is memoryless). Equivalently: ``B ~ Bin(k−1, q)``
  ones, a uniform B-subset. Positions are mapped onto ``[k] ∖ {x}`` by ``y + [y >= x]`` and the
  item's own bit, ``Bernoulli(p)``, is merged in (``sparse_rows``). Cost Θ(q·k) per report, all
  in row-wise numpy passes. Output: one int32 row of sorted positions per report, padded with k.
* **dense** (large q): packed words of iid Bernoulli(q) bits from random 64-bit words by
  bit-serial comparison of an infinitely precise uniform U with q's (finite) binary expansion:
  bit = [U < q], decided at the first binary digit where U and q differ. Each step costs one
  random word per 64 still-undecided positions; the first ``DENSE_FULL_STEPS`` steps run on every
  word (after j steps a bit is undecided w.p. 2^-j), the rest only on the words still undecided.
  About 8 random words per output word: the random draws are most of the cost.
  Exact for the double q (not up to 2^-53 as ``random() < q``). Cost Θ(k/64 · steps) per report.

Counting (the server): "indices" rows by one ``bincount`` (Θ(cap) per report); packed bit rows by
Harley–Seal carry-save adders over their 64-bit words (about 5 word operations per word, Θ(k/64)
per report, no unpacking; ``count_words``), whose bit planes are unpacked once per batch.

Truncation (``cap``): the sparse wire encoding has a fixed width of ``cap`` indices, so with a cap
the sampler draws the report *conditioned on at most cap ones* (rows over the cap are redrawn
whole: exact rejection). The number of ones, ``Bin(k−1, q) + Bern(p)``, has the same law whatever
the item, so the conditioning divides every ``P(report | x)`` by the same constant: the
likelihood ratios, hence ε, are unchanged exactly.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["sparse_rows", "sparse_chunk_rows", "rows_to_packed", "dense_words", "use_sparse",
           "count_words", "count_indices", "packed_from_words"]

# Cost model (ns per report), measured at k = 65 536, numpy 2.4, one core, chunks as below:
#   sparse ≈ SPARSE_NS_PER_ONE · (q·k + 6 sd)   (exponential draw ~3.5 ns, cumsum ~2.4, mapping
#            and merge ~3, packing the bitmap ~5; OUE ε = 4: 1392 gaps, ~23 µs packed)
#   dense  ≈ DENSE_NS_PER_WORD · k/64 · (leading zero digits of q + DENSE_STEPS)
#            (one random word ~2 ns + ~2 bitwise passes per step; SUE ε = 4, q = 0.119:
#            3 leading zeros, ~8 random words per word, ~30 µs). Equal cost near ε = 3.5 (OUE).
SPARSE_NS_PER_ONE = 16.0
DENSE_NS_PER_WORD = 3.2
DENSE_STEPS = 6.0            # full-width steps after the leading zeros before most words decide
# Per chunk: ~2^17 gaps (1 MiB float64 plus int32 copies) for the sparse path, 2^15 words per
# step for the dense one: cache-resident across their passes.
SPARSE_CHUNK_ELEMENTS = 1 << 17
DENSE_CHUNK_WORDS = 1 << 15
DENSE_FULL_STEPS = 7         # after j steps 1 − (1 − 2^-j)^64 of the words are undecided: 39 %,
DENSE_LOCAL_STEPS = 5        # then 1.5 % after 5 more on those (in cache), finished batch-wide
SPARSE_EXTRA_SD = 6.0        # gaps drawn per row: mean + 6 sd; P(a row needs more) ~ 1e-9
COUNT_BLOCK_WORDS = 1 << 14  # words per carry-save lane block (16 lanes at k = 65 536)
INDEX_CHUNK_SLOTS = 1 << 17  # "indices" slots per bincount (as intp: 1 MiB)
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
    """``uint64[n_words]`` of iid Bernoulli(q) bits (exact), by bit-serial comparison with q
    (module notes): per chunk of ``DENSE_CHUNK_WORDS`` (cache-resident), the first
    ``DENSE_FULL_STEPS`` digits on every word, then ``DENSE_LOCAL_STEPS`` more on the words still
    undecided; the digits after that on the few words left, all chunks together."""
    digits = _q_digits(q)
    full = min(len(digits), DENSE_FULL_STEPS)
    local = digits[full:full + DENSE_LOCAL_STEPS]
    out = np.empty(n_words, dtype=np.uint64)
    live_idx, live_und = [], []
    for lo in range(0, n_words, DENSE_CHUNK_WORDS):
        res = out[lo:lo + DENSE_CHUNK_WORDS]
        # r's bit 1 stands for U's digit 0 (r and ~r have the same law)
        und = rng.integers(0, _FULL64, len(res), dtype=np.uint64)
        if digits[0]:
            res[:] = und              # U's digit 0 < 1: U < q (bit 1)
            np.invert(und, out=und)   # digit 1: still equal
        else:
            res[:] = 0                # digit 1 > 0: U > q (bit 0); digit 0: still equal
        for d in digits[1:full]:
            _digit_step(d, und, rng.integers(0, _FULL64, len(res), dtype=np.uint64), res)
        idx = np.flatnonzero(und != 0)
        idx, und = _live_steps(local, idx + lo, und.take(idx), rng, out)
        live_idx.append(idx)
        live_und.append(und)
    if live_idx:
        _live_steps(digits[full + DENSE_LOCAL_STEPS:], np.concatenate(live_idx),
                    np.concatenate(live_und), rng, out)
    # bits still undecided after the last digit have U = q's expansion so far, U >= q: bit 0
    return out


def _live_steps(digits: list, idx: np.ndarray, und: np.ndarray, rng: np.random.Generator,
                out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Comparison steps with ``digits`` on the words ``out[idx]`` whose undecided bits are
    ``und``, dropping decided words whenever half of them are; returns the words still undecided
    (``idx``, ``und``)."""
    acc = np.zeros(len(idx), dtype=np.uint64)
    for d in digits:
        if not len(und):
            break
        _digit_step(d, und, rng.integers(0, _FULL64, len(und), dtype=np.uint64), acc)
        live = und != 0
        if 2 * np.count_nonzero(live) <= len(und):
            out[idx] |= acc
            keep = np.flatnonzero(live)
            idx, und = idx.take(keep), und.take(keep)
            acc = np.zeros(len(idx), dtype=np.uint64)
    out[idx] |= acc
    keep = np.flatnonzero(und != 0)
    return idx.take(keep), und.take(keep)


def _digit_step(d: int, und: np.ndarray, r: np.ndarray, res: np.ndarray) -> None:
    """One comparison step with q's digit ``d`` (in place; ``r`` is consumed): where ``und`` and
    r's bit are both 1 (U's digit 0), d = 1 decides U < q (bit 1 into ``res``), d = 0 leaves U
    equal so far; where r's bit is 0 (U's digit 1), d = 1 leaves U equal, d = 0 decides U > q."""
    if d:
        np.bitwise_and(und, r, out=r)
        res |= r
        und ^= r
    else:
        und &= r


def packed_from_words(words: np.ndarray, k: int) -> np.ndarray:
    """``uint64[n, ceil(k/64)]`` rows → packed ``uint8[n, ceil(k/8)]`` (LSB first); bits >= k of
    the words must already be zero."""
    n = len(words)
    raw = np.ascontiguousarray(words.astype("<u8", copy=False)).view(np.uint8).reshape(n, -1)
    return raw[:, :(k + 7) // 8] if raw.shape[1] != (k + 7) // 8 else raw


def _gap_sums(c: int, width: int, m: int, lam: float, rng: np.random.Generator) -> np.ndarray:
    """``float64[c, >= width]``: per row, the partial sums ``Y_1 < Y_2 < ...`` of iid gaps
    ``1 + ⌊E/λ⌋``, ``E ~ Exp(1)``, ``λ = −log(1−q)`` (``P(gap > j) = e^{−λj} = (1−q)^j``: exactly
    Geometric(q); the same exponentials, hence the same values, as ``rng.geometric(q)`` for q < 1/3
    except where ``E/λ`` is an exact integer). ``Y_j`` is the 1-based position of the j-th one of an
    iid Bernoulli(q) sequence. Rows whose last sum is still ``<= m`` continue with more gaps
    (memoryless), so every row ends with a sum ``> m``; shorter rows are padded with inf."""
    y = rng.standard_exponential((c, width))
    np.divide(y, lam, out=y)
    np.floor(y, out=y)
    y += 1.0
    np.cumsum(y, axis=1, out=y)
    tail = np.flatnonzero(y[:, -1] <= m)
    if len(tail):
        more = _gap_sums(len(tail), width, m, lam, rng)
        more += y[tail, -1:]
        wide = np.full((c, width + more.shape[1]), np.inf)
        wide[:, :width] = y
        wide[tail, width:] = more
        y = wide
    return y


def sparse_rows(x: np.ndarray, k: int, p: float, q: float, rng: np.random.Generator,
                cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ones int32[n, w], counts int64[n])`` of ``n = len(x)`` reports (see module notes): the
    ones of row r are ``ones[r, :counts[r]]``, strictly increasing in ``[0, k)``; the rest of the
    row is the sentinel ``k``.

    Non-item ones: ``Y`` from ``_gap_sums`` clipped to k (``Y = k``: past the m = k − 1 non-item
    positions); position ``Y − 1`` among them maps to ``z = Y − 1 + [Y − 1 >= x] = Y − [Y <= x]``
    in ``[k] ∖ {x}``, and the sentinel stays k. The item bit (w.p. p) is merged into the sorted row
    without a search: with ``b = x`` if the bit is set, else ``b = k``, the merged row is
    ``r_0 = min(z_0, b)``, ``r_s = min(z_s, max(z_{s−1}, b))``.
    ``cap``: rows with more than ``cap`` ones are redrawn whole (conditioning on <= cap ones)."""
    c = len(x)
    m = k - 1
    y = _gap_sums(c, _sparse_width(k, q), m, -math.log1p(-q), rng)
    w = y.shape[1]
    z = np.empty((c, w), dtype=np.int32)
    np.minimum(y, k, out=z, casting="unsafe")
    xc = x.astype(np.int32)[:, None]
    np.subtract(z, z <= xc, out=z, casting="unsafe")
    bit = rng.random(c) < p
    counts = np.count_nonzero(z < k, axis=1) + bit
    b = np.where(bit, xc[:, 0], np.int32(k))[:, None]
    ones = np.empty((c, w + 1), dtype=np.int32)
    np.maximum(z, b, out=ones[:, 1:])
    np.minimum(ones[:, 1:w], z[:, 1:], out=ones[:, 1:w])
    np.minimum(z[:, :1], b, out=ones[:, :1])
    if cap is not None:
        bad = np.flatnonzero(counts > cap)
        if len(bad):
            sub, counts[bad] = sparse_rows(x[bad], k, p, q, rng, cap)
            if sub.shape[1] > ones.shape[1]:
                ones = np.pad(ones, ((0, 0), (0, sub.shape[1] - ones.shape[1])),
                              constant_values=k)
            ones[bad] = k
            ones[bad, :sub.shape[1]] = sub
    return ones, counts


def _sparse_width(k: int, q: float) -> int:
    """Gaps drawn per row: mean + ``SPARSE_EXTRA_SD`` sd + 8 of ``Bin(k − 1, q)``, in [1, k − 1]."""
    m = k - 1
    return max(1, min(m, int(m * q + SPARSE_EXTRA_SD * math.sqrt(m * q * (1 - q)) + 8)))


def sparse_chunk_rows(k: int, q: float) -> int:
    """Reports per ``sparse_rows`` call: about ``SPARSE_CHUNK_ELEMENTS`` gaps (cache-resident)."""
    return max(1, SPARSE_CHUNK_ELEMENTS // _sparse_width(k, q))


def rows_to_packed(ones: np.ndarray, k: int) -> np.ndarray:
    """``sparse_rows``' ones → packed ``uint8[c, ceil(k/8)]`` (LSB first): per row, 32-bit words
    ``Σ 2^(i mod 32)`` over its ones i by one float64 ``bincount`` (distinct powers of two below
    2^32: exact), ``k // 32 + 1`` words per row: the sentinel k falls in word k // 32, past the
    packed bytes when 32 | k, and otherwise gets weight 0."""
    c = len(ones)
    w = k // 32 + 1
    weights = np.ldexp(1.0, ones & 31)
    if k % 32:                          # the sentinel's bit would land in the last data word
        weights[ones == k] = 0.0
    slots = (ones >> 5) + (np.arange(c) * w)[:, None]
    words = np.bincount(slots.ravel(), weights.ravel(), minlength=c * w)
    return words.astype("<u4").view(np.uint8).reshape(c, 4 * w)[:, :(k + 7) // 8]


def count_indices(slots: np.ndarray, k: int) -> np.ndarray:
    """Column counts (int64[k]) of "indices" rows ``[c, i_1 < ... < i_c, 0, ...]``: per chunk of
    about ``INDEX_CHUNK_SLOTS`` slots (cache-resident), one ``bincount`` of every slot, minus the
    count column's values and the zero padding."""
    counts = slots[:, 0].astype(np.intp)
    total = np.zeros(k + 1, dtype=np.int64)
    step = max(1, INDEX_CHUNK_SLOTS // slots.shape[1])
    for lo in range(0, len(slots), step):
        total += np.bincount(slots[lo:lo + step].reshape(-1).astype(np.intp), minlength=k + 1)
    count_hist = np.bincount(counts)                   # counts <= cap <= k
    total[:len(count_hist)] -= count_hist
    total[0] -= slots.size - len(counts) - int(counts.sum())
    return total[:k]


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


def _csa(h: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Carry-save adder on bit planes: ``h ← h ⊕ a ⊕ b`` in place; returns the carry
    ``maj(h, a, b) = a·b + h·(a ⊕ b)``, of twice the weight. ``a``, ``b`` are not modified."""
    u = a ^ b
    carry = a & b
    carry |= np.bitwise_and(h, u)
    h ^= u
    return carry


def count_words(words: np.ndarray, k: int) -> np.ndarray:
    """Column sums (int64[k]) of ``uint64[n, W]`` bit rows (bit i of word w is column 64w + i).

    Harley–Seal carry-save counting over L lanes (the largest power of two with
    ``L·W <= COUNT_BLOCK_WORDS``, so a block stays in cache): the rows are taken 2L at a
    time (the last block zero-padded) as two planes a, b of weight 1; ``planes[j]`` holds bit j of
    every (lane, column) running count, and ``planes[j] ← planes[j] ⊕ a ⊕ b`` with the carry
    ``maj(planes[j], a, b)`` (weight 2^(j+1)) waiting in ``pending[j + 1]`` for a second one,
    with which it goes one weight up in turn: about 5 word operations per input word, no
    unpacking. At the end the pending carries are added in (one full adder per weight), the
    lanes are summed by a pairwise ripple-carry tree (``_add_planes``), and the planes of the
    final count are unpacked eight at a time into one byte per column (``Σ bit_j·2^j < 256``)."""
    n, w = words.shape
    lanes = 1 << max(0, (COUNT_BLOCK_WORDS // w).bit_length() - 1)
    planes, pending = [], [None]
    for lo in range(0, n, 2 * lanes):
        block = words[lo:lo + 2 * lanes]
        if len(block) < 2 * lanes:
            block = np.concatenate([block, np.zeros((2 * lanes - len(block), w), block.dtype)])
        a, b, j = block[:lanes], block[lanes:], 0
        while True:
            if j == len(planes):
                planes.append(np.zeros((lanes, w), dtype=np.uint64))
                pending.append(None)
            carry = _csa(planes[j], a, b)
            j += 1
            if pending[j] is None:
                pending[j] = carry
                break
            a, b, pending[j] = pending[j], carry, None
    number, carry = [], None
    for j, extra in enumerate(pending):
        terms = [t for t in (planes[j] if j < len(planes) else None, extra, carry)
                 if t is not None]
        if len(terms) == 3:
            carry = _csa(*terms)
        elif len(terms) == 2:
            carry = terms[0] & terms[1]
            terms[0] ^= terms[1]
        else:
            carry = None
        if terms:
            number.append(terms[0])
    while lanes > 1 and number:
        lanes //= 2
        number = _add_planes([p[:lanes] for p in number], [p[lanes:] for p in number])
    total = np.zeros(64 * w, dtype=np.int64)
    for lo in range(0, len(number), 8):
        byte = np.zeros(64 * w, dtype=np.uint8)
        for j, plane in enumerate(number[lo:lo + 8]):
            bits = np.unpackbits(plane.astype("<u8", copy=False).view(np.uint8),
                                 bitorder="little")
            byte |= np.left_shift(bits, j, out=bits)
        total += byte.astype(np.int64) << lo
    return total[:k]
