"""HCMS / CMS (SPEC §9) and item ids of names: privacy by enumeration, unbiasedness and variance
over the hash family by Monte Carlo, samplers under four BitGenerators, merge and wire contracts."""
import math

import numpy as np
import pytest

from _baseline_contract import assert_config_round_trip, assert_merge_contract, assert_wire_round_trip
from privfreq.protocols import Reason
from privfreq.protocols.cms import CMS, HCMS
from privfreq.protocols.hashing import MAX_NAME_BYTES, item_id

BITGENS = [np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64]


# ----- item ids ------------------------------------------------------------------------------------
def test_item_id_is_stable_and_batch_independent():
    names = ["a", "ab", "abcdefgh", "abcdefghi", "é", "🙂 emoji", "x" * MAX_NAME_BYTES]
    ids = item_id(names)
    assert ids.dtype == np.int64 and len(set(ids.tolist())) == len(names)
    # one at a time (other padding width) = in a batch; bytes = str
    assert [int(item_id([s])[0]) for s in names] == ids.tolist()
    assert item_id([s.encode() for s in names]).tolist() == ids.tolist()
    assert item_id(["a"], key=1)[0] != ids[0]
    # pinned: ids must never change between releases (collections keep them)
    assert int(item_id(["a"])[0]) == 2416768863545840669


@pytest.mark.parametrize("bad, msg", [
    ([""], "empty"), (["x" * (MAX_NAME_BYTES + 1)], "limit is 255"), ([b"ok", b"\xff\xfe"], "UTF-8"),
    (["\ud800"], "UTF-8"), ([3], "str or bytes")])
def test_item_id_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        item_id(bad)


# ----- privacy by enumeration ------------------------------------------------------------------------
@pytest.mark.parametrize("proto", [HCMS(6, 1.3, hashes=2, buckets=8, hash_seed=3),
                                   CMS(6, 1.3, hashes=2, buckets=4, hash_seed=3)])
def test_exact_privacy_by_enumeration(proto):
    dists = [proto.output_distribution(x) for x in range(proto.k)]
    outs = list(dists[0])
    table = np.array([[d[o] for o in outs] for d in dists])
    np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-12)
    ratio = (table[:, None, :] / table[None, :, :]).max()
    assert ratio == pytest.approx(math.exp(proto.epsilon), rel=1e-12)   # exactly ε, not less


@pytest.mark.parametrize("bitgen", BITGENS)
@pytest.mark.parametrize("proto", [HCMS(6, 1.0, hashes=2, buckets=4, hash_seed=1),
                                   CMS(6, 1.0, hashes=2, buckets=4, hash_seed=1)])
def test_sampler_matches_enumeration(proto, bitgen):
    """Each output's count within 5 binomial σ of n·P (16 outputs x 8 cases; false failure
    < 128·6e-7 ≈ 1e-4)."""
    n, item = 40000, 4
    b = proto.randomize(np.full(n, item), np.random.Generator(bitgen(12)))
    if isinstance(proto, HCMS):
        keys = b.values[:, 0].tolist()
    else:
        keys = list(zip(b.block.tolist(), b.values[:, 0].tolist()))
    dist = proto.output_distribution(item)
    counts = {o: 0 for o in dist}
    for key in keys:
        counts[key] += 1
    for o, p in dist.items():
        assert abs(counts[o] - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1, o


# ----- unbiasedness and variance over the hash family --------------------------------------------------
def _monte_carlo(cls, eps, trials, seed):
    """The same users under ``trials`` hash seeds: heavy items 600/300/100, 1000 singletons."""
    ids = item_id([f"w{i}" for i in range(1003)])
    counts = np.r_[600, 300, 100, np.ones(1000, np.int64)]
    items = np.repeat(ids, counts)
    n = len(items)
    cand = np.r_[ids[:3], item_id(["absent"])]
    rng = np.random.default_rng(seed)
    est = np.empty((trials, len(cand)))
    for t in range(trials):
        p = cls(8, eps, hashes=16, buckets=64, hash_seed=t)
        acc = p.add_reports(p.create_accumulator(), p.randomize(items, rng))
        est[t] = p.estimate_candidates(acc, cand, stderr=False)[0]
    f_all = np.r_[counts[:3], 0, counts[3:]] / n       # candidates first, then the other items
    var = cls(8, eps, hashes=16, buckets=64).variance(n, f_all)[:4]
    return est, f_all[:4], var


@pytest.mark.parametrize("cls", [HCMS, CMS])
def test_unbiased_and_variance_within_10_percent(cls):
    """Mean within 4.5 σ/√R of f; empirical variance within 10 % of the formula: with R = 4000
    the sample variance's relative sd is ≈ √(2/R) = 2.2 %, so 10 % is 4.5 σ (false failure
    ≈ 1e-5 per check, 8 checks per protocol)."""
    trials = 4000
    est, f, var = _monte_carlo(cls, 2.0, trials, seed=7)
    z = (est.mean(axis=0) - f) / np.sqrt(var / trials)
    assert (np.abs(z) < 4.5).all(), z
    ratio = est.var(axis=0, ddof=1) / var
    assert (np.abs(ratio - 1) < 0.10).all(), ratio


def test_hcms_variance_formula_at_zero():
    """f_v = 0, large K: ≈ (m/(m−1))²(c² − 1/m²)/n."""
    p = HCMS(4, 1.0, hashes=1 << 16, buckets=1024)
    c = (math.e + 1) / (math.e - 1)
    assert p.variance(10**6)[0] == pytest.approx((1024 / 1023)**2 * (c * c - 1 / 1024**2) / 1e6,
                                                 rel=1e-4)


# ----- merge, wire, config -----------------------------------------------------------------------------
@pytest.mark.parametrize("proto", [HCMS(10, 2.0, hashes=8, buckets=32), CMS(10, 2.0, hashes=8,
                                                                             buckets=32)])
def test_merge_contract_and_wire_round_trip(proto):
    items = item_id([f"n{i % 37}" for i in range(3000)])
    assert_merge_contract(proto, items, seed=3, shards=6)
    assert_wire_round_trip(proto, items, seed=3)
    assert_config_round_trip(proto)


def test_hostile_payloads_rejected():
    h = HCMS(4, 1.0, hashes=2, buckets=4)                  # 16 outputs in one byte
    _, why = h.decode_payloads(0, np.array([[15], [16], [255]], np.uint8))
    assert list(why) == [Reason.OK, Reason.VALUE_OUT_OF_RANGE, Reason.VALUE_OUT_OF_RANGE]
    c = CMS(4, 1.0, hashes=2, buckets=4)                   # 4 bits: high nibble is padding
    _, why = c.decode_payloads(0, np.array([[0x0F], [0x10]], np.uint8))
    assert list(why) == [Reason.OK, Reason.BAD_PADDING]


@pytest.mark.parametrize("kw, msg", [({"buckets": 100}, "power of 2"), ({"hashes": 0}, "hashes"),
                                     ({"epsilon": -1}, "epsilon"), ({"buckets": 1}, "buckets")])
def test_bad_params(kw, msg):
    args = {"k": 4, "epsilon": 1.0, **kw}
    with pytest.raises(ValueError, match=msg):
        HCMS(**args)
    with pytest.raises(ValueError, match=msg):
        CMS(**args)


def test_ids_outside_k_are_fine_and_estimate_is_candidates_0_to_k():
    p = HCMS(5, 8.0, hashes=64, buckets=256)
    rng = np.random.default_rng(0)
    items = np.r_[np.full(4000, 3), np.full(2000, -(2**62))]
    acc = p.add_reports(p.create_accumulator(), p.randomize(items, rng))
    est = p.estimate(acc)
    f, se = p.estimate_candidates(acc, [3, -(2**62), 7])
    assert est.frequencies[3] == f[0]
    # 5 σ bands (false failure < 3·6e-7)
    assert np.all(np.abs(f - [2 / 3, 1 / 3, 0]) < 5 * se), (f, se)
