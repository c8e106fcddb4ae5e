"""Exactness of the unary-encoding samplers and counters (protocols/ue_sampler.py) and the
"indices" wire encoding of OUE/SUE.

* Both samplers (sparse, dense), forced, under every BitGenerator: the full output law at k = 5
  against ``output_distribution``; at k = 131 (three 64-bit words, a partial last word) the exact
  law of the number of ones (Bin(k−1, q) + Bern(p)) and of every single bit (chi-square), with a
  SIGALRM deadline so a sampler loop that never ends fails instead of hanging.
* The "indices" encoding's truncation at a forced small cap: the sampled law is the enumerated
  law conditioned on at most cap ones, and that conditioned law is still exactly ε-LDP.
* Counting: the carry-save adders and the index bincount equal a direct column sum.
Chi-square tests have false-failure probability CHI2_ALPHA = 1e-4 each (fixed seeds).
"""
import math

import numpy as np
import pytest
from scipy import stats

from _baseline_contract import (BIT_GENERATORS, CHI2_ALPHA, assert_exact_privacy,
                                assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip, deadline)
import privfreq.protocols.ue_sampler as us
import privfreq.protocols.unary_encoding as ue
from privfreq.protocols.base import Reason
from privfreq.protocols.unary_encoding import OUE, SUE

DEADLINE_S = 20


def _force(monkeypatch, sparse):
    monkeypatch.setattr(us, "use_sparse", lambda k, q: sparse)
    monkeypatch.setattr(ue.ue_sampler, "use_sparse", lambda k, q: sparse)


def _tiny_chunks(monkeypatch):
    monkeypatch.setattr(ue, "CHUNK_ELEMENTS", 300)
    monkeypatch.setattr(us, "SPARSE_CHUNK_ELEMENTS", 50)
    monkeypatch.setattr(us, "DENSE_CHUNK_WORDS", 7)
    monkeypatch.setattr(ue, "DENSE_BATCH_WORDS", 9)
    monkeypatch.setattr(us, "DENSE_FULL_STEPS", 2)
    monkeypatch.setattr(us, "DENSE_LOCAL_STEPS", 1)
    monkeypatch.setattr(us, "SPARSE_EXTRA_SD", -3.0)     # too few gaps: the extension loop runs


def _keys(proto):
    return lambda batch: [tuple(r) for r in proto._bits(batch.values).astype(int).tolist()]


@pytest.mark.parametrize("bg", list(BIT_GENERATORS))
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("cls,eps", [(OUE, 1.0), (SUE, 2.5)])
def test_paths_match_distribution(monkeypatch, bg, sparse, cls, eps):
    _force(monkeypatch, sparse)
    proto = cls(5, eps)
    gen = np.random.Generator(BIT_GENERATORS[bg](11))
    with deadline(DEADLINE_S):
        assert_sampler_matches(proto, 3, _keys(proto), 40_000, seed=1,
                               sampler=lambda items, _: proto.randomize(items, gen))


@pytest.mark.parametrize("tiny", [False, True], ids=["chunks", "tiny-chunks"])
@pytest.mark.parametrize("bg", list(BIT_GENERATORS))
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("encoding", ["bitmap", "indices"])
def test_count_and_bit_laws_at_k131(monkeypatch, tiny, bg, sparse, encoding):
    # k = 131: three words, a partial last one. OUE at ε = 3 (q ≈ 0.047). Exact law of the number
    # of ones and of each bit; chi-square, false failure 1e-4 each.
    _force(monkeypatch, sparse)
    if tiny:
        _tiny_chunks(monkeypatch)
    k, n, item = 131, 20_000, 70
    proto = OUE(k, 3.0, encoding=encoding)
    gen = np.random.Generator(BIT_GENERATORS[bg](5))
    with deadline(DEADLINE_S):
        batch = proto.randomize(np.full(n, item), gen)
    bits = proto._bits(batch.values)
    ones = bits.sum(axis=1)
    b = stats.binom.pmf(np.arange(k), k - 1, proto.q)
    pmf = (1 - proto.p) * np.append(b, 0) + proto.p * np.append(0, b)
    obs = np.bincount(ones, minlength=k + 1).astype(float)
    exp = pmf * n
    small = exp < 5
    obs = np.append(obs[~small], obs[small].sum())
    exp = np.append(exp[~small], exp[small].sum())
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > CHI2_ALPHA
    col = bits.sum(axis=0)
    # the item's bit: Bin(n, p); the others pooled per word position: a 2-cell test per bit is
    # 131 tests, so test the vector of other-bit counts jointly (sum of squared z ~ χ²_{k−1})
    assert abs(col[item] - n * proto.p) < 4.5 * math.sqrt(n * proto.p * (1 - proto.p))  # 7e-6
    others = np.delete(col, item)
    z2 = ((others - n * proto.q) ** 2 / (n * proto.q * (1 - proto.q))).sum()
    assert stats.chi2.sf(z2, k - 1) > CHI2_ALPHA


@pytest.mark.parametrize("q", [0.25, 0.375, 0.5, 1 / 3, 0.0179862099620915, 2 ** -40])
def test_dense_words_bit_probability(q):
    # iid Bernoulli(q) bits: the total over 64·2^15 bits within 4.5 sd (false failure 7e-6).
    n_words = 1 << 15
    w = us.dense_words(n_words, q, np.random.default_rng(3))
    total = int(np.bitwise_count(w).sum())
    n = 64 * n_words
    assert abs(total - n * q) <= 4.5 * math.sqrt(n * q * (1 - q)) + 1e-9
    assert us._q_digits(0.375) == [0, 1, 1]


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_truncated_law_and_privacy(monkeypatch, sparse):
    # Force cap = 2 at k = 5: the report is conditioned on <= 2 ones. The sampled law must be the
    # enumerated one conditioned on it, and that law is exactly ε-LDP (same normaliser for every
    # item). Chi-square false failure 1e-4.
    _force(monkeypatch, sparse)
    monkeypatch.setattr(ue, "sparse_cap", lambda k, p, q: 2)
    proto = SUE(5, 1.5, encoding="indices")
    assert proto.cap == 2 and proto.payload_width(0) == 3

    def cond(item):
        d = {key: v for key, v in proto.output_distribution(item).items() if sum(key) <= 2}
        z = sum(d.values())
        return {key: v / z for key, v in d.items()}

    with deadline(DEADLINE_S):
        assert_sampler_matches(proto, 1, _keys(proto), 40_000, seed=4, dist=cond(1))
    assert_exact_privacy(proto, dist=cond)


def test_sparse_cap_and_auto_encoding():
    o = OUE(65536, 4.0, encoding="auto")
    assert o.encoding == "indices" and o.payload_width(0) == 2 * (1 + o.cap)
    tail = 0.5 * stats.binom.sf(o.cap - 1, 65535, o.q) + 0.5 * stats.binom.sf(o.cap, 65535, o.q)
    assert tail <= 2.0 ** -64
    assert 0.5 * stats.binom.sf(o.cap - 2, 65535, o.q) > 2.0 ** -64 * 0.5   # smallest such cap
    assert OUE(65536, 1.0, encoding="auto").encoding == "bitmap"
    assert SUE(65536, 4.0, encoding="auto").encoding == "bitmap"      # 7813 ones: bitmap shorter
    assert "encoding" not in OUE(10, 1.0).to_params()                 # old fingerprints kept
    assert OUE(1000, 6.0, encoding="auto").to_params()["encoding"] == "indices"
    with pytest.raises(ValueError, match="encoding"):
        OUE(10, 1.0, encoding="sparse")


@pytest.mark.parametrize("cls", [OUE, SUE])
def test_indices_contracts(cls):
    proto = cls(300, 5.0, encoding="indices")
    assert_wire_round_trip(proto, np.arange(300), seed=6)
    assert_merge_contract(proto, np.random.default_rng(3).integers(0, 300, 3000), seed=4)
    counts = np.zeros(40, int)
    counts[:6] = [400, 250, 150, 100, 60, 40]
    assert_unbiased_and_variance(cls(40, 5.0, encoding="indices"), counts, runs=300, seed=2)


def test_indices_rejections():
    proto = OUE(300, 5.0, encoding="indices")
    batch = proto.randomize(np.arange(8), np.random.default_rng(1))
    raw = proto.encode_payloads(0, batch.values)
    v = raw.view("<u2")
    assert (v[:, 0] >= 2).sum() >= 1
    r = int(np.flatnonzero(v[:, 0] >= 2)[0])
    bad = np.repeat(raw[r:r + 1], 4, axis=0)
    bv = bad.view("<u2")
    bv[0, 0] = proto.cap + 1                     # count over the cap
    bv[1, 1] = 300                               # a position outside [k]
    bv[2, 2] = bv[2, 1]                          # a repeat
    bv[3, 1 + int(bv[3, 0])] = 7                 # a nonzero slot after the count
    _, reason = proto.decode_payloads(0, bad)
    assert list(reason) == [Reason.VALUE_OUT_OF_RANGE, Reason.VALUE_OUT_OF_RANGE,
                            Reason.DUPLICATE_VALUE, Reason.BAD_PADDING]
    _, reason = proto.decode_payloads(0, raw[:, :-1])
    assert (reason == Reason.BAD_LENGTH).all()


@pytest.mark.parametrize("block_words", [us.COUNT_BLOCK_WORDS, 64], ids=["lanes", "few-lanes"])
@pytest.mark.parametrize("k", [7, 64, 131, 1000])
def test_count_bits_equals_column_sum(monkeypatch, k, block_words):
    # few-lanes: 4 lanes at k = 1000, so 1300 rows run long carry chains through many weights
    monkeypatch.setattr(us, "COUNT_BLOCK_WORDS", block_words)
    rng = np.random.default_rng(k)
    for n in (0, 1, 7, 8, 9, 255, 256, 257, 1300):
        packed = ue.randomize_bits(rng.integers(0, k, n), k, 0.5, 0.3, rng)
        direct = np.unpackbits(packed, axis=1, count=k, bitorder="little").sum(axis=0)
        np.testing.assert_array_equal(ue.count_bits(packed, k), direct)
    full = np.full((300, (k + 7) // 8), 255, dtype=np.uint8)   # every count at its maximum
    if k % 8:
        full[:, -1] = (1 << (k % 8)) - 1
    np.testing.assert_array_equal(ue.count_bits(full, k), np.full(k, 300))


@pytest.mark.parametrize("k,eps", [(300, 5.0), (40, 1.0)])
def test_indices_count_equals_column_sum(k, eps):
    proto = OUE(k, eps, encoding="indices")
    batch = proto.randomize(np.random.default_rng(2).integers(0, k, 700), np.random.default_rng(3))
    acc = proto.add_reports(proto.create_accumulator(), batch)
    np.testing.assert_array_equal(acc.counts, proto._bits(batch.values).sum(axis=0))
