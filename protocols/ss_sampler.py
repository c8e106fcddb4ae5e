"""The Subset Selection sampler: exact, vectorized draws of ``P(Z | r) ∝ e^{ε·[r∈Z]}`` over the
ω-subsets Z of ``[m]`` (SPEC §1), for SS on [k] and for every block of MSS.

Two exact strategies, chosen per (m, ω) by the cost model of ``_use_bitmap`` (constants fitted to
measurements on the reference machine, numpy 2.4, one core; benchmarks/results/client.md):
  * "sort" (small ω/m): draw ω values per row with replacement, sort rows (int16 keys, several
    rows per sort row), redraw the positions of repeated values until every row is distinct.
    Cost ≈ ω·(draw + sort + map + write) per row plus redraw rounds, which grow with ω²/m.
  * "bitmap" (large ω/m): per row an m-bit bitmap with iid Bernoulli(ρ) bits (a few random words
    combined per 64 positions); rows whose count lands outside a window below the target are
    redrawn, then uniformly drawn non-members are added until the count is exact, and the sorted
    subset is read off with one flatnonzero. Cost ≈ m·(unpack + flatnonzero) per row.
Both are exact: every step is equivariant under the permutations of [m] that fix r, so the final
subset given its size (and given whether it holds r) is uniform. No per-report Python loop: the
loops below run over redraw rounds / fill steps, each a vectorized pass over the pending rows.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from privfreq.protocols.subset_selection import SSConstants

__all__ = ["MAX_REPORT_VALUES_BYTES", "check_report_memory", "fill_block_subsets", "fill_subsets",
           "sample_subsets"]

# Largest ``ReportBatch.values`` one randomize call may allocate: 1 GiB (2^27 int64 values). The
# sampler's temporaries are already chunked (BITMAP_*_BYTES, SORT_CHUNK_ELEMENTS below), so the
# output array is the only allocation that grows with the batch; above this bound the call refuses
# before allocating and names the batch size that fits (k = 2^20, ε = 1: ω = 282 005, so 476 rows).
MAX_REPORT_VALUES_BYTES = 1 << 30

SORT_NS_PER_ELEMENT = 5.0        # sort path, per subset element, no repeats (ω = 18: ~6.7 ns)
SORT_NS_PER_REPEAT_ROUND = 2.0   # sort path, per element and per expected repeat (capped at 6)
SORT_WIDE_KEY_FACTOR = 1.3       # keys wider than int16 (2m > 32767): no SIMD sort, no row grouping
BITMAP_NS_PER_POSITION = 1.4     # bitmap path, per position of [m] (m = 1023: 1.3-2.1 ns)
BITMAP_NS_PER_ELEMENT = 1.0      # bitmap path, int64 write of the result, per subset element
# Temporaries per chunk of rows, in bytes. The fill steps' count (~60) does not depend on the rows,
# so they run over a 2 MiB chunk of packed words (fewer steps per row; 1 MiB and 4 MiB chunks were
# 1.1-1.3x slower end to end). The start bitmaps are drawn 512 KiB at a time (2 MiB at once was
# 1.5x slower: several live multi-MiB temporaries cost page faults), and the byte map scanned by
# flatnonzero is 1 MiB (it runs at ~0.44 ns/byte while cache-resident, 1.6x slower at 16 MiB).
BITMAP_WORDS_BYTES = 1 << 21
BITMAP_INIT_BYTES = 1 << 19
BITMAP_SCAN_BYTES = 1 << 20
BITMAP_WINDOW_SD = 2.5           # start-count window in sd of the count (1.0 and 1.5 were slower)
SORT_CHUNK_ELEMENTS = 1 << 18    # sort path: 2^18 values (512 KiB int16) per chunk (1.2x vs 2^21)
# Rows share one sort row of ~256 int16 keys (numpy's SIMD sort keeps <= 256 in registers):
# measured at ω = 18, 101 ns/row vs 127 with one row per sort row and 106 at 288 keys.
SORT_ROW_ELEMENTS = 256
# Fill steps: no row can be full before step min(need) + 1; compact finished rows every 4 steps
# after (each compaction costs ~3 ns per pending row, masking a full row's draw ~0.8 ns).
FILL_DENSE_STEPS = 1
FILL_COMPACT_EVERY = 4
_ONE = np.uint64(1)
_FULL64 = 1 << 64                # exclusive bound of a full-range uint64 draw


def check_report_memory(owner: str, n: int, width: int, itemsize: int = 8) -> None:
    """``ValueError`` before allocating when ``n`` reports of ``width`` values exceed
    MAX_REPORT_VALUES_BYTES; the message gives the bytes asked for and the largest batch that fits."""
    need = int(n) * int(width) * int(itemsize)
    if need > MAX_REPORT_VALUES_BYTES:
        fit = max(1, MAX_REPORT_VALUES_BYTES // (int(width) * int(itemsize)))
        raise ValueError(
            f"{owner}: randomizing {n} reports of {width} values each needs {need / 2**30:.1f} GiB "
            f"for the reports alone (limit {MAX_REPORT_VALUES_BYTES / 2**30:.0f} GiB); randomize "
            f"in batches of at most {fit} reports (batch_rows), or choose a protocol with shorter "
            f"reports (privfreq plan)")


def _expected_dups(m: int, omega: int) -> float:
    """Expected repeated draws among ω uniform draws from [m] (≈ ω²/2m): the sort path's redraws."""
    return omega - m * (1.0 - (1.0 - 1.0 / m) ** omega)


def _use_bitmap(m: int, omega: int) -> bool:
    """Cost model: the bitmap path pays per position of [m], the sort path per subset element and
    again per redraw round (each round re-sorts the rows that still hold a repeat)."""
    per = SORT_NS_PER_ELEMENT + SORT_NS_PER_REPEAT_ROUND * min(6.0, _expected_dups(m, omega))
    if 2 * m > np.iinfo(np.int16).max:
        per *= SORT_WIDE_KEY_FACTOR
    bitmap_cost = m * BITMAP_NS_PER_POSITION + omega * BITMAP_NS_PER_ELEMENT
    return bitmap_cost < omega * per


def _value_dtype(m: int):
    return np.int16 if m <= np.iinfo(np.int16).max else (
        np.int32 if m <= np.iinfo(np.int32).max else np.int64)


def _put(out, rows, lo, block):
    """Write ``block`` into ``out[lo:lo+len]`` (rows None) or ``out[rows[lo:lo+len], :ω]``.

    Whole rows of a C-contiguous ``out`` are scattered as fixed-size records with ``np.put``
    (measured 23 vs 36 ns per 18-value row for ``out[rows] = block``)."""
    if rows is None:
        out[lo:lo + len(block), :block.shape[1]] = block
    elif block.shape[1] == out.shape[1] and out.flags.c_contiguous:
        rec = np.dtype((np.void, out.itemsize * out.shape[1]))
        src = np.ascontiguousarray(block, dtype=out.dtype)
        np.put(out.view(rec).reshape(-1), rows[lo:lo + len(block)], src.view(rec).reshape(-1))
    else:
        out[rows[lo:lo + len(block)], :block.shape[1]] = block


def _sort_path(r, hit, omega, m, rng, out, rows, lo, mrow=None):
    """Sorted subsets of a chunk by draw, sort and redraw of repeats (see the module notes).

    Every row draws ω values y from ``[m−1]``, mapped onto ``[m]∖{r}`` by ``y + [y >= r]`` before
    sorting; a hit row's first value is then replaced by r, which no mapped value can repeat. G rows
    share one sort row through key offsets ``g·m`` (short rows sort slowly; see SORT_ROW_ELEMENTS).
    Rows with a repeat then redraw the repeated positions and re-sort alone until distinct.

    ``mrow`` (MSS, blocks of equal ω): row i samples from ``[mrow[i]]`` with ``m = max(mrow)``; a
    drawn y >= mrow[i] − 1 is out of range and redrawn like a repeat, so accepted values are
    uniform on ``[mrow[i] − 1]``."""
    n = len(r)
    dt = _value_dtype(m)
    # int16 rows sort with SIMD (~1 ns/element); wider keys sort ~10x slower: never widen to group
    group = max(1, min(n, SORT_ROW_ELEMENTS // omega, np.iinfo(dt).max // m)) \
        if dt == np.int16 else 1
    off = _group_offsets(SORT_CHUNK_ELEMENTS // omega + 1, group, m, dt)[:n]
    thr = r.astype(dt) + off                  # mapped keys y + off >= r + off move up by one
    lim = None if mrow is None else mrow.astype(dt) + off     # valid keys are < lim
    z = rng.integers(0, m - 1, (n, omega), dtype=dt)
    z += off[:, None]
    z += z >= thr[:, None]
    hits = np.flatnonzero(hit)
    z[hits, 0] = thr[hits]
    _grouped_sort(z, group)
    todo = _rows_to_redraw(z, lim)
    while len(todo):
        sub = z[todo]
        flat = sub.reshape(-1)
        pos = np.flatnonzero(flat[1:] == flat[:-1]) + 1      # later copies of repeated keys
        pos = pos[pos % omega != 0]                          # not pairs straddling two rows
        if lim is not None:
            bad = (sub >= lim[todo][:, None]).reshape(-1)
            bad[pos] = True
            pos = np.flatnonzero(bad)
        row = pos // omega
        new = rng.integers(0, m - 1, len(pos), dtype=dt)
        new += off[todo[row]]
        new += new >= thr[todo[row]]
        flat[pos] = new
        if group > 1:            # re-key to the offset pattern of rows 0..len-1 and group-sort
            shift = (off[:len(todo)] - off[todo])[:, None]
            sub += shift
            _grouped_sort(sub, group)
            sub -= shift
        else:
            sub.sort(axis=1)
        z[todo] = sub
        todo = todo[_rows_to_redraw(sub, None if lim is None else lim[todo])]
    if rows is None:
        np.subtract(z, off[:, None], out=out[lo:lo + n, :omega], casting="unsafe")
    else:
        _put(out, rows, lo, np.subtract(z, off[:, None], dtype=out.dtype))


def _grouped_sort(z: np.ndarray, group: int) -> None:
    """Sort each row of ``z`` in place, where row i's keys lie in ``[(i mod G)·m, (i mod G + 1)·m)``:
    G consecutive rows are sorted as one row (keys of different rows never interleave)."""
    n, w = z.shape
    n_g = n - n % group
    if group > 1 and n_g:
        z[:n_g].reshape(n_g // group, group * w).sort(axis=1)
        if n_g < n:
            z[n_g:].sort(axis=1)
    else:
        z.sort(axis=1)


@functools.lru_cache(maxsize=16)
def _group_offsets(n: int, group: int, m: int, dt) -> np.ndarray:
    """Read-only key offsets ``(i mod G)·m`` of rows 0..n-1 (computed once per shape)."""
    off = ((np.arange(n) % group) * m).astype(dt)
    off.flags.writeable = False
    return off


def _rows_to_redraw(z: np.ndarray, lim=None) -> np.ndarray:
    """Rows of a C-contiguous row-sorted key array holding a repeat, or (``lim`` given) a key
    ``>= lim[row]`` (out of range keys sort last). Repeats are found on the flat array shifted by
    one (3x faster than the 2-D strided compare), dropping pairs that straddle two rows."""
    w = z.shape[1]
    zf = z.reshape(-1)
    pos = np.flatnonzero(zf[1:] == zf[:-1])
    pos = pos[(pos + 1) % w != 0]
    row = pos // w
    if lim is not None:
        mask = z[:, -1] >= lim
        mask[row] = True
        return np.flatnonzero(mask)
    if len(row):
        row = row[np.concatenate(([True], row[1:] != row[:-1]))]
    return row


def _bernoulli_words(nwords: int, j: int, e: int, rng) -> np.ndarray:
    """uint64 words whose bits are iid Bernoulli(j/2^e): a bit-serial ``u < j`` over e random words
    from the most significant bit, stopping after the lowest set bit of j. In place: one fresh
    temporary per level (large temporaries cost page faults here).

    Every bit of every word must be a fair coin, so the words come from the public full-range
    ``rng.integers(0, 2^64, dtype=uint64)``, 64 uniform bits under any BitGenerator (raw outputs
    are 32 bits wide under MT19937 and not specified in general)."""
    lt = eq = None
    for i in range(e - 1, -1, -1):
        u = rng.integers(0, _FULL64, nwords, dtype=np.uint64)
        if (j >> i) & 1:                    # lt |= eq & ~u ; eq &= u
            if eq is None:
                eq = u
                lt = ~u
            else:
                np.invert(u, out=u)
                u &= eq
                if lt is None:
                    lt = u
                else:
                    lt |= u
                eq ^= u
        elif eq is None:                    # eq &= ~u
            eq = np.invert(u, out=u)
        else:
            np.invert(u, out=u)
            eq &= u
        if not j & ((1 << i) - 1):
            break
    return lt if lt is not None else np.zeros(nwords, dtype=np.uint64)


def _start_window(m: int, omega: int) -> tuple[int, int, int]:
    """``(A, j, e)`` of the bitmap path's start: rows whose count misses ``[target − A, target]``,
    A = 2.5 sd of the count, are redrawn; bits are Bernoulli(j/2^e), the coarsest ``e >= 6`` that
    puts the mean count within A/4 of ``ω − A/2`` (so ~70 % of rows land in the window).

    A fixed e = 6 is exact enough at m ≈ 10^3, but its step (m−1)/64 exceeds the window for large
    m: at m = 22000, ε = 2 the mean sat 2 sd below it (350 µs/report in redraws), at m = 10^5,
    ε = 1.5 almost no row was ever accepted. Cost: e − (trailing zeros of j) random words per 64
    positions."""
    rho = (omega - 1) / (m - 1)
    sd = math.sqrt(max(1.0, (m - 1) * rho * (1 - rho)))
    span = max(4, int(math.ceil(BITMAP_WINDOW_SD * sd)))
    density = max(0.0, omega - 0.5 * span) / (m - 1)
    for e in range(6, 31):
        j = min(int(round(density * 2 ** e)), 2 ** e - 1)
        if abs(j / 2 ** e - density) * (m - 1) <= span / 4:
            break
    return span, j, e


def _bitmap_path(r, hit, omega, m, rng, out, rows, lo):
    """Sorted subsets of a chunk via Bernoulli bitmaps filled to an exact count (module notes).

    While filling, bit r is set in every row and the target count is ω+1 in rows that must avoid r
    (ω in the others), so additions never pick r; afterwards r is cleared where it must not be.
    Start and read-off run in sub-chunks of BITMAP_SCAN_BYTES of byte map; the fill steps over the
    whole chunk (their count, ~50, does not grow with the rows, so larger chunks amortise them)."""
    n = len(r)
    nw = -(-m // 64)
    target = omega + (~hit).astype(np.int64)
    span, j, e = _start_window(m, omega)
    if j == 0:                  # no random bits: every row starts at count 1 and is filled
        span = max(span, omega)
    wr, bit = r >> 6, np.left_shift(_ONE, (r & 63).astype(np.uint64))
    tail = np.uint64((1 << (m - 64 * (nw - 1))) - 1)
    words = np.empty((n, nw), dtype=np.uint64)
    need = np.empty(n, dtype=np.int64)
    sub = max(1, BITMAP_SCAN_BYTES // (64 * nw))
    ones = np.ones(nw)
    init_rows = max(1, BITMAP_INIT_BYTES // (8 * nw))
    for s in range(0, n, init_rows):
        todo = np.arange(s, min(n, s + init_rows))
        while len(todo):
            w = _bernoulli_words(len(todo) * nw, j, e, rng).reshape(len(todo), nw)
            w[:, -1] &= tail
            w[np.arange(len(todo)), wr[todo]] |= bit[todo]
            # row popcounts by a float matvec (exact: counts < 2^53; 4x faster than an int sum)
            gap = target[todo] - (np.bitwise_count(w) @ ones).astype(np.int64)
            bad = np.flatnonzero((gap < 0) | (gap > span))
            words[todo] = w
            need[todo] = gap
            todo = todo[bad]
    _fill_words(words.reshape(-1), nw, need, m, rng)
    nh = np.flatnonzero(~hit)
    words[nh, wr[nh]] &= ~bit[nh]
    for s in range(0, n, sub):
        e = min(n, s + sub)
        bm = np.unpackbits(words[s:e].reshape(-1).view(np.uint8), bitorder="little").view(bool)
        flat = np.flatnonzero(bm).reshape(e - s, omega)
        base = (np.arange(lo + s, lo + e) - (lo + s)) * (64 * nw)
        if rows is None:
            np.subtract(flat, base[:, None], out=out[lo + s:lo + e, :omega])
        else:
            flat -= base[:, None]
            _put(out, rows, lo + s, flat)


def _fill_words(wf, nw, need, m, rng):
    """Add ``need[i]`` uniformly drawn non-member positions to row i of the packed bitmap ``wf``.

    Each step draws one position per unfinished row and sets its bit (a no-op if it is already a
    member); a row counts the step only if the bit was new. Rows are distinct, so no two updates in
    a step touch the same word. Full rows are masked out (their drawn bit is zeroed) and dropped
    every few steps, which is cheaper than compacting every step. Positions come from a buffer of
    iid uniform draws, consumed in order."""
    act = np.flatnonzero(need)
    left = need[act]
    base = act * nw
    wo = bits = np.empty(0, dtype=np.int64)
    p = step = 0
    while len(base):
        na = len(base)
        if p + na > len(wo):
            pos = rng.integers(0, m, max(8 * na, 1 << 14))
            wo, bits, p = pos >> 6, np.left_shift(_ONE, (pos & 63).view(np.uint64)), 0
        fw = base + wo[p:p + na]
        b = bits[p:p + na]
        p += na
        step += 1
        if step > FILL_DENSE_STEPS:      # some rows may be full: zero their bit
            b = b & -(left > 0).view(np.uint8).astype(np.uint64)
        cur = wf[fw]
        new = cur | b
        wf[fw] = new
        left -= new != cur
        if step >= FILL_DENSE_STEPS and step % FILL_COMPACT_EVERY == 0:
            keep = np.flatnonzero(left > 0)
            if len(keep) < na:
                base, left = base[keep], left[keep]


def fill_subsets(out: np.ndarray, rows, values: np.ndarray, c: SSConstants,
                 rng: np.random.Generator) -> None:
    """SS randomizer writing report i into ``out[i, :ω]`` (rows None) or ``out[rows[i], :ω]``.

    Row i gets a sorted ω-subset of ``[m]``: with probability p, ``{r_i}`` plus a uniform
    (ω−1)-subset of ``[m]∖{r_i}``; otherwise a uniform ω-subset of ``[m]∖{r_i}`` (SPEC §1)."""
    r = np.asarray(values, dtype=np.int64)
    n = len(r)
    hit = rng.random(n) < c.p
    if c.omega == 1:
        other = rng.integers(0, c.m - 1, n)
        other += other >= r
        _put(out, rows, 0, np.where(hit, r, other)[:, None])
        return
    if _use_bitmap(c.m, c.omega):
        path, step = _bitmap_path, max(1, BITMAP_WORDS_BYTES // (8 * (-(-c.m // 64))))
    else:
        path, step = _sort_path, max(1, SORT_CHUNK_ELEMENTS // c.omega)
    for lo in range(0, n, step):
        path(r[lo:lo + step], hit[lo:lo + step], c.omega, c.m, rng, out, rows, lo)


def fill_block_subsets(out: np.ndarray, items: np.ndarray, block: np.ndarray,
                       blocks: tuple[SSConstants, ...], rng: np.random.Generator) -> None:
    """MSS client core: row i gets the SS report of ``items[i] mod m_j`` on ``[m_j]``,
    ``j = block[i]``, written to ``out[i, :ω_j]`` (the caller pads the rest).

    When every block has the same ω > 1 and takes the sort path, all rows go through one pass
    with per-row moduli (contiguous writes, no per-block gathers); otherwise block by block, each
    block's rows written in place."""
    x = np.asarray(items, dtype=np.int64)
    omega = blocks[0].omega
    fused = (len(blocks) > 1 and omega > 1 and all(c.omega == omega for c in blocks)
             and not any(_use_bitmap(c.m, c.omega) for c in blocks))
    if fused:
        m_max = max(c.m for c in blocks)
        dt = _value_dtype(m_max)
        mods = np.array([c.m for c in blocks], dtype=dt)
        mrow = mods[block]
        # residues in the narrow key type when the items fit it (MSS ε = 4: ratio 2.02 vs 2.14)
        narrow = x.size > 0 and int(x.max()) <= np.iinfo(dt).max
        r = x.astype(dt) % mrow if narrow else (x % mrow).astype(dt)
        hit = rng.random(len(x)) < np.array([c.p for c in blocks])[block]
        step = max(1, SORT_CHUNK_ELEMENTS // omega)
        for lo in range(0, len(x), step):
            _sort_path(r[lo:lo + step], hit[lo:lo + step], omega, m_max, rng, out, None, lo,
                       mrow=mrow[lo:lo + step])
        return
    if len(blocks) <= 4:     # rows of each block, ascending: one pass per block is cheapest
        groups = [np.flatnonzero(block == b) for b in range(len(blocks))]
    else:                    # many blocks: one stable (radix) argsort of the small block ids
        order = np.argsort(block.astype(np.uint8 if len(blocks) <= 256 else np.uint16),
                           kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(block, minlength=len(blocks)))[:-1])
    for rows, c in zip(groups, blocks):
        fill_subsets(out, rows, x[rows] % c.m, c, rng)


def sample_subsets(values: np.ndarray, c: SSConstants, rng: np.random.Generator) -> np.ndarray:
    """SS randomizer for a batch of values in ``[m]``: ``int64[n, ω]`` sorted subsets (SPEC §1):
    with probability p, r plus a uniform (ω−1)-subset of ``[m]∖{r}``, else a uniform ω-subset of
    ``[m]∖{r}``. See :func:`fill_subsets`."""
    check_report_memory("SS", len(values), c.omega)
    out = np.empty((len(values), c.omega), dtype=np.int64)
    fill_subsets(out, None, values, c, rng)
    return out
