"""Client samplers at speed and baselines at k = 2^20 (issue 5, "Throughput at scale").

* Both SS sampler strategies of protocols/ss_sampler.py (sort and bitmap), each forced, tiny
  chunks included, match the exact P(Z | r) of SPEC §1, alone and inside MSS (block by block, each
  block's rows written in place, or in one pass with per-row moduli when all ω are equal), and the
  ω = 1 path too.
* Under every BitGenerator (PCG64, MT19937, Philox, SFC64) both paths, for SS and MSS, at m > 32
  (members in both 32-bit halves of a 64-bit word, m = 40 ... 2000): the projection of Z onto a
  window of positions matches its exact law, the start-bitmap redraw loop ends (a deadline fails
  a hang), and a Clopper–Pearson bound on the privacy loss of the events "v ∈ Z" stays <= ε.
* GRR, OLH and Hadamard response randomize, aggregate and estimate at k = 2^20 with small n: the one
  heavy hitter is found, its estimate is within 5σ of the truth and the spread of the other items'
  estimates matches the predicted variance; OLH's chunked aggregation equals direct hashing and its
  temporaries do not grow with n.
Fixed seeds throughout; false-failure probabilities are stated beside each statistical check.
"""
import math
import tracemalloc

import numpy as np
import pytest

from _baseline_contract import BIT_GENERATORS, CHI2_ALPHA, assert_sampler_matches, deadline
import privfreq.protocols.olh as olh_mod
import privfreq.protocols.ss_sampler as ss_mod
from privfreq.protocols.audit import clopper_pearson
from privfreq.protocols.grr import GRR
from privfreq.protocols.hadamard import HadamardResponse
from privfreq.protocols.mss import ModularSubsetSelection as MSS
from privfreq.protocols.olh import OLH
from privfreq.protocols.ss_sampler import sample_subsets
from privfreq.protocols.subset_selection import SubsetSelection, ss_constants

K_BIG = 1 << 20
DEADLINE_S = 10      # per randomize call; each takes < 0.2 s here


def _generator(bg: str, seed: int) -> np.random.Generator:
    return np.random.Generator(BIT_GENERATORS[bg](seed))


def _randomize(proto, items, bg, seed):
    with deadline(DEADLINE_S):
        return proto.randomize(items, _generator(bg, seed))


def _subset_keys(batch):
    return [tuple(r) for r in batch.values.tolist()]


def _mss_keys(batch):
    return [(int(j), tuple(v for v in r if v >= 0))
            for j, r in zip(batch.block, batch.values.tolist())]


def _tiny_chunks(monkeypatch):
    """Chunks of a few rows everywhere, so every chunk/offset/remainder branch runs."""
    monkeypatch.setattr(ss_mod, "SORT_CHUNK_ELEMENTS", 61)
    monkeypatch.setattr(ss_mod, "SORT_ROW_ELEMENTS", 10)
    monkeypatch.setattr(ss_mod, "BITMAP_WORDS_BYTES", 8 * 41)
    monkeypatch.setattr(ss_mod, "BITMAP_INIT_BYTES", 8 * 9)
    monkeypatch.setattr(ss_mod, "BITMAP_SCAN_BYTES", 64 * 5)


# chunk sizes do not interact with the BitGenerator: tiny chunks under PCG64 only
_TINY_BG = [(False, bg) for bg in BIT_GENERATORS] + [(True, "pcg64")]
_TINY_BG_IDS = [("tiny-chunks-" if tiny else "chunks-") + bg for tiny, bg in _TINY_BG]


@pytest.mark.parametrize("bitmap", [False, True], ids=["sort", "bitmap"])
@pytest.mark.parametrize("tiny,bg", _TINY_BG, ids=_TINY_BG_IDS)
@pytest.mark.parametrize("k,eps", [(7, 0.3), (9, 1.0), (12, 0.7)])
def test_ss_paths_match_distribution(monkeypatch, bitmap, tiny, bg, k, eps):
    # chi-square goodness of fit, false failure 1e-4 per case (CHI2_ALPHA)
    monkeypatch.setattr(ss_mod, "_use_bitmap", lambda m, omega: bitmap)
    if tiny:
        _tiny_chunks(monkeypatch)
    proto = SubsetSelection(k, eps)
    assert proto.ss.omega > 1
    assert_sampler_matches(proto, 3, _subset_keys, 30_000, seed=21,
                           sampler=lambda items, _: _randomize(proto, items, bg, 21))


@pytest.mark.parametrize("k,eps", [(9, 1.0), (12, 0.7)])
def test_bitmap_path_with_finer_start_density_matches_distribution(monkeypatch, k, eps):
    # Large m needs start densities j/2^e with e > 6 (_start_window); small m never does, so force
    # e = 9 here: the path must stay exact for any density. Chi-square, false failure 1e-4 each.
    start = ss_mod._start_window

    def finer(m, omega):
        span, j, e = start(m, omega)
        return span, min(int(round(j / 2 ** e * 512)) + 3, 511), 9    # off the 2^-6 grid

    monkeypatch.setattr(ss_mod, "_use_bitmap", lambda m, omega: True)
    monkeypatch.setattr(ss_mod, "_start_window", finer)
    _tiny_chunks(monkeypatch)
    assert_sampler_matches(SubsetSelection(k, eps), 3, _subset_keys, 30_000, seed=23)


@pytest.mark.parametrize("m", [64, 1023, 4099, 22000, 100_003, 1 << 20])
def test_bitmap_start_window_accepts_most_rows(m):
    # The start count is 1 + Binomial(m − 1, j/2^e) (bit r forced); rows outside
    # [ω − A, ω] are redrawn. A fixed e = 6 accepted 2 % of rows at m = 22000, ε = 2 and ~0 at
    # m = 100003, ε = 1.5 (minutes per batch). Exact binomial probabilities: no randomness.
    from scipy.stats import binom
    for eps in np.arange(0.25, 3.01, 0.25):
        c = ss_constants(m, float(eps))
        if c.omega < 2:
            continue
        span, j, e = ss_mod._start_window(m, c.omega)
        if j == 0:
            continue
        dist = binom(m - 1, j / 2 ** e)
        accept = dist.cdf(c.omega - 1) - dist.cdf(c.omega - span - 2)
        assert accept >= 0.5, (m, eps, c.omega, span, j, e, accept)


@pytest.mark.parametrize("bitmap", [False, True], ids=["sort", "bitmap"])
@pytest.mark.parametrize("tiny,bg", _TINY_BG, ids=_TINY_BG_IDS)
def test_mss_paths_match_distribution(monkeypatch, bitmap, tiny, bg):
    # MSS writes each block's subsets into its rows of the shared values array; tiny chunks make
    # the row offsets matter. Chi-square false failure 1e-4 per case.
    monkeypatch.setattr(ss_mod, "_use_bitmap", lambda m, omega: bitmap)
    if tiny:
        _tiny_chunks(monkeypatch)
    proto = MSS(12, 0.5, (5, 7, 11))
    assert_sampler_matches(proto, 8, _mss_keys, 40_000, seed=22,
                           sampler=lambda items, _: _randomize(proto, items, bg, 22))


@pytest.mark.parametrize("tiny", [False, True], ids=["chunks", "tiny-chunks"])
@pytest.mark.parametrize("moduli", [(7, 9), (7, 8, 9)])
def test_mss_fused_equal_omega_matches_distribution(monkeypatch, tiny, moduli):
    # Blocks of equal ω on the sort path share one pass with per-row moduli: values drawn at or
    # above a row's m_j − 1 are redrawn (25% of draws for m = 7 next to 9). Chi-square, 1e-4.
    proto = MSS(12, 1.0, moduli)
    assert len({c.omega for c in proto.blocks}) == 1 and proto.blocks[0].omega > 1
    assert not any(ss_mod._use_bitmap(c.m, c.omega) for c in proto.blocks)
    if tiny:
        _tiny_chunks(monkeypatch)
    assert_sampler_matches(proto, 8, _mss_keys, 40_000, seed=28)


def test_omega_one_path_matches_distribution():
    proto = SubsetSelection(10, 3.0)
    assert proto.ss.omega == 1
    assert_sampler_matches(proto, 4, _subset_keys, 30_000, seed=23)


def test_many_block_mss_randomize_keeps_rows():
    # ℓ > 4 groups rows with a radix argsort: each report's subset must be its own item's.
    proto = MSS(30, 8.0, (5, 7, 9, 11, 13))
    assert all(c.omega == 1 for c in proto.blocks)
    x = np.random.default_rng(24).integers(0, 30, 5000)
    batch = proto.randomize(x, np.random.default_rng(25))
    mods = np.array(proto.moduli)[batch.block]
    kept = batch.values[:, 0] == x % mods          # p = e^8/(e^8 + m - 1) >= 0.996
    assert kept.mean() > 0.98                       # ~Bin(5000, >=0.996): mean 0.996, sd 0.0009


@pytest.mark.parametrize("eps", [1.0, 4.0])
def test_realistic_sizes_are_exact_subsets(eps):
    # m = 1023: ω = 275 (bitmap path) at ε = 1, ω = 18 (sort path) at ε = 4. Structure exactly;
    # P(r ∈ Z) = p and uniform other members within 5σ (false failure ~1e-6 each).
    c = ss_constants(1023, eps)
    assert ss_mod._use_bitmap(c.m, c.omega) == (eps == 1.0)
    n = 20_000
    r = np.random.default_rng(26).integers(0, c.m, n)
    z = sample_subsets(r, c, np.random.default_rng(27))
    assert z.shape == (n, c.omega) and z.min() >= 0 and z.max() < c.m
    assert (np.diff(z, axis=1) > 0).all()
    has_r = (z == r[:, None]).any(axis=1)
    assert abs(has_r.mean() - c.p) < 5 * np.sqrt(c.p * (1 - c.p) / n)
    # offsets (z - r) mod m over the non-r members: uniform on 1..m-1. A row holds each offset at
    # most once, so a cell count has variance ≈ e(1 − π) (π = members per row / (m − 1)), not e:
    # the chi-square statistic is rescaled by 1/(1 − π); 5σ of its chi2(m−2) law.
    off = ((z - r[:, None]) % c.m)[z != r[:, None]]
    counts = np.bincount(off, minlength=c.m)[1:]
    expected = len(off) / (c.m - 1)
    pi = len(off) / n / (c.m - 1)
    chi2 = ((counts - expected) ** 2 / (expected * (1 - pi))).sum()
    assert abs(chi2 - (c.m - 2)) < 5 * np.sqrt(2 * (c.m - 2))


# ----- every BitGenerator, m > 32 -------------------------------------------------------------
# The bitmap path packs 64 positions per uint64 word, so positions 32..63 of each word need the
# upper 32 random bits; m = 40 (and MSS moduli 37, 40, 41) put members there, m = 48 ... 2000 fill
# whole words (ε = 1: ω = 10 ... 538). Subsets are too many for a full goodness of fit, so the
# tests project Z onto a window W of positions (r, both halves of the first two words, the middle
# and the last position), whose law is exact: for T ⊆ W with |T| = t,
#   P(Z ∩ W = T) = p·C(m − |W|, ω − t)/C(m − 1, ω − 1)    if r ∈ T,
#                  (1 − p)·C(m − |W|, ω − t)/C(m − 1, ω)  otherwise.

def _window(m: int, r: int) -> np.ndarray:
    return np.array(sorted({r, 1, 31, 32, 33, 63, 64, m // 2, m - 1} & set(range(m))))


def _window_law(c, r: int, window: np.ndarray) -> dict[int, float]:
    """Exact ``P(Z ∩ W = T)`` under ``P(Z | r)``, keyed by the bit code ``Σ_{W[i] ∈ T} 2^i``."""
    s, i_r = len(window), int(np.flatnonzero(window == r)[0])
    law = {}
    for code in range(1 << s):
        t = code.bit_count()
        if t > c.omega or c.omega - t > c.m - s:
            continue
        rest = math.comb(c.m - s, c.omega - t)
        law[code] = (c.p * (rest / math.comb(c.m - 1, c.omega - 1)) if code >> i_r & 1
                     else (1 - c.p) * (rest / math.comb(c.m - 1, c.omega)))
    return law


def _members(values: np.ndarray, m: int) -> np.ndarray:
    """``bool[n, m]``: ``[v ∈ Z_i]`` (padding -1 lands in a dropped extra column)."""
    mem = np.zeros((len(values), m + 1), dtype=bool)
    mem[np.arange(len(values))[:, None], values] = True
    return mem[:, :m]


def _codes(values: np.ndarray, m: int, window: np.ndarray) -> np.ndarray:
    return _members(values, m)[:, window] @ (1 << np.arange(len(window)))


@pytest.mark.parametrize("bg", BIT_GENERATORS)
@pytest.mark.parametrize("bitmap", [False, True], ids=["sort", "bitmap"])
@pytest.mark.parametrize("m", [40, 48, 64, 200, 2000])
def test_ss_paths_exact_under_every_bit_generator(monkeypatch, bg, bitmap, m):
    # Chi-square of Z ∩ W against its exact law (cells < 5 expected pooled), false failure
    # CHI2_ALPHA = 1e-4 per case; a randomize call running past DEADLINE_S fails the case.
    monkeypatch.setattr(ss_mod, "_use_bitmap", lambda m, omega: bitmap)
    proto = SubsetSelection(m, 1.0)
    window = _window(m, 0)
    assert_sampler_matches(proto, 0, lambda b: _codes(b.values, m, window).tolist(), 10_000,
                           seed=41, dist=_window_law(proto.ss, 0, window),
                           sampler=lambda items, _: _randomize(proto, items, bg, 41))


@pytest.mark.parametrize("bg", BIT_GENERATORS)
@pytest.mark.parametrize("bitmap", [False, True], ids=["sort", "bitmap"])
# moduli 40, 41: ω = 11 in both blocks, so the sort path is the fused one-pass sampler
@pytest.mark.parametrize("moduli", [(37, 40), (40, 41)], ids=["37-40", "40-41"])
def test_mss_paths_exact_under_every_bit_generator(monkeypatch, bg, bitmap, moduli):
    # Chi-square of (block j, Z ∩ W_j) against (1/ℓ)·(exact law of block j), false failure 1e-4
    # per case; DEADLINE_S per randomize call.
    monkeypatch.setattr(ss_mod, "_use_bitmap", lambda m, omega: bitmap)
    proto, x = MSS(40, 1.0, moduli), 38
    windows = [_window(c.m, x % c.m) for c in proto.blocks]
    dist = {(j, code): pr / len(proto.blocks) for j, c in enumerate(proto.blocks)
            for code, pr in _window_law(c, x % c.m, windows[j]).items()}
    m_max = max(proto.moduli)

    def keys_of(batch):
        codes = np.empty(len(batch), dtype=np.int64)
        for j, w in enumerate(windows):
            rows = batch.block == j
            codes[rows] = _codes(batch.values[rows], m_max, w)
        return list(zip(batch.block.tolist(), codes.tolist()))

    assert_sampler_matches(proto, x, keys_of, 20_000, seed=42, dist=dist,
                           sampler=lambda items, _: _randomize(proto, items, bg, 42))


@pytest.mark.parametrize("bg", BIT_GENERATORS)
@pytest.mark.parametrize("bitmap", [False, True], ids=["sort", "bitmap"])
@pytest.mark.parametrize("proto", [SubsetSelection(40, 1.0), MSS(40, 1.0, (37, 40))],
                         ids=["ss-40", "mss-37-40"])
def test_paths_privacy_under_every_bit_generator(monkeypatch, bg, bitmap, proto):
    # ε-LDP: P(E | x0) <= e^ε·P(E | x1) for every event E. Events "(block j, v ∈ Z)" and
    # "(block j, v ∉ Z)" for every v, inputs 0 and 35 (35 in the upper half of word 0); their exact
    # ratios are at most max(p/q, (1−q)/(1−p)) = e^0.64 (SS, m = 40). The bound is
    # max ln(CP_lower(P(E | x))/CP_upper(P(E | x'))) over events and both directions, with every
    # one-sided Clopper–Pearson bound at level CHI2_ALPHA/(4·events) (Bonferroni): it exceeds the
    # true loss with probability <= 1e-4, so it exceeds ε with probability <= 1e-4 per case.
    monkeypatch.setattr(ss_mod, "_use_bitmap", lambda m, omega: bitmap)
    n, blocks = 20_000, getattr(proto, "blocks", None) or (proto.ss,)
    m_max = max(c.m for c in blocks)
    hits = []
    for x, seed in ((0, 43), (35, 44)):
        batch = _randomize(proto, np.full(n, x, dtype=np.int64), bg, seed)
        mem = _members(batch.values, m_max)
        h = []
        for j, c in enumerate(blocks):
            rows = batch.block == j
            inside = mem[rows, :c.m].sum(axis=0)
            h += [inside, rows.sum() - inside]
        hits.append(np.concatenate(h))
    alpha = CHI2_ALPHA / (4 * len(hits[0]))
    (lo0, hi0), (lo1, hi1) = (clopper_pearson(h, n, alpha) for h in hits)
    with np.errstate(divide="ignore"):
        bound = max(np.log(lo0 / hi1).max(), np.log(lo1 / hi0).max())
    assert bound <= proto.epsilon, f"privacy loss lower bound {bound:.3f} > ε = {proto.epsilon}"


# ----- k = 2^20 baselines -------------------------------------------------------------------
def _check_spike(proto, n, seed, x0=123_457):
    """All n users hold x0: x0 is the argmax, its estimate is within 5σ of 1 (false failure 6e-7),
    and the mean squared estimate over the other items is within 10% of their predicted variance
    (2^20 items: its relative sd is ~0.1% for independent items; correlations across items through
    shared reports stay far below 10% here)."""
    rng = np.random.default_rng(seed)
    batch = proto.randomize(np.full(n, x0, dtype=np.int64), rng)
    acc = proto.add_reports(proto.create_accumulator(), batch)
    est = proto.estimate(acc)
    f = est.frequencies
    assert f.shape == (K_BIG,) and np.isfinite(f).all()
    assert int(np.argmax(f)) == x0
    truth = np.zeros(K_BIG)
    truth[x0] = 1.0
    var = proto.variance(n, truth)
    assert abs(f[x0] - 1.0) < 5 * np.sqrt(var[x0])
    others = np.ones(K_BIG, dtype=bool)
    others[x0] = False
    assert abs(np.mean(f[others] ** 2) / np.mean(var[others]) - 1) < 0.1
    return est


def test_grr_at_a_million_items():
    _check_spike(GRR(K_BIG, 15.0), 2000, seed=31)


@pytest.mark.parametrize("eps", [1.0, 4.0])
def test_hadamard_at_a_million_items(eps):
    proto = HadamardResponse(K_BIG, eps)
    _check_spike(proto, 20_000 if eps == 1.0 else 4000, seed=32)


def test_olh_at_a_million_items():
    _check_spike(OLH(K_BIG, 4.0), 96, seed=33)


def test_olh_aggregation_memory_does_not_grow_with_n():
    # Temporaries are bounded by CHUNK_ELEMENTS pairs; only the O(k) counts and offsets remain.
    proto = OLH(K_BIG, 2.0)
    rng = np.random.default_rng(34)
    peaks = []
    for n in (8, 64):
        batch = proto.randomize(rng.integers(0, K_BIG, n), rng)
        acc = proto.create_accumulator()
        tracemalloc.start()
        proto.add_reports(acc, batch)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    budget = 3 * 8 * K_BIG + 3 * 8 * olh_mod.CHUNK_ELEMENTS    # offsets, block sums + scratch
    assert max(peaks) <= budget, peaks
    assert peaks[1] <= peaks[0] * 1.1 + (1 << 20)


@pytest.mark.parametrize("chunk", [7, 45, 10**6])
def test_olh_chunked_equals_direct_hashing(monkeypatch, chunk):
    # chunk 7 < k splits items too; 45 gives one report per block; 10^6 is a single block.
    proto = OLH(30, 1.0)
    batch = proto.randomize(np.arange(30).repeat(7), np.random.default_rng(35))
    direct = (proto.hash_items(batch.seed, np.arange(30)) == batch.values).sum(axis=0)
    monkeypatch.setattr(olh_mod, "CHUNK_ELEMENTS", chunk)
    acc = proto.add_reports(proto.create_accumulator(), batch)
    np.testing.assert_array_equal(acc.counts, direct)
