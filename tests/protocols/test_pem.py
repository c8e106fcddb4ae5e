"""PEM (prefix extension, SPEC §9): privacy by enumeration, prefix estimates under four
BitGenerators, discovery of planted heavy hitters, merge and wire contracts."""
import math
import pickle

import numpy as np
import pytest

from _baseline_contract import assert_config_round_trip, assert_wire_round_trip
from privfreq.protocols.cms import HCMS
from privfreq.protocols.olh import OLH
from privfreq.protocols.pem import PEM, discover

BITGENS = [np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64]


@pytest.mark.parametrize("proto", [
    PEM(16, 1.2, step=1, start_bits=2, seed_bits=3),                               # OLH, OLH
    PEM(16, 1.2, step=2, start_bits=0, olh_limit=4, hashes=2, buckets=4, seed_bits=3)])  # OLH, HCMS
def test_exact_privacy_by_enumeration(proto):
    dists = [proto.output_distribution(x) for x in range(proto.k)]
    outs = list(dists[0])
    table = np.array([[d[o] for o in outs] for d in dists])
    np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-12)
    assert (table[:, None, :] / table[None, :, :]).max() == pytest.approx(math.exp(1.2), rel=1e-12)


def test_oracles_per_level():
    p = PEM(2**20, 4.0, step=4)
    assert [type(o) for o in p.oracles] == [OLH, OLH, HCMS, HCMS, HCMS]
    assert [p.prefix_length(g) for g in range(p.groups)] == [4, 8, 12, 16, 20]
    q = PEM(2**64, 2.0, step=4, start_bits=4)
    assert q.groups == 15 and q.prefixes(np.array([-1]), 14)[0] == -1   # full 64-bit id
    with pytest.raises(ValueError, match="step"):
        PEM(2**10, 1.0, step=3, start_bits=0)


def _planted(rng, n, k=2**20):
    heavy = rng.choice(k, 5, replace=False)
    share = np.array([0.10, 0.08, 0.06, 0.05, 0.04])
    pick = rng.choice(6, n, p=np.r_[share, 1 - share.sum()])
    items = np.where(pick < 5, heavy[np.minimum(pick, 4)], rng.integers(0, k, n))
    return heavy, share, items


@pytest.mark.parametrize("bitgen", BITGENS)
def test_prefix_estimates_unbiased_under_each_bitgen(bitgen):
    """Every group's estimate of the heaviest item's prefix within 5 σ of its true share
    (≈ 0.10 + background; 5 groups x 4 generators, false failure < 20·6e-7)."""
    rng = np.random.Generator(bitgen(5))
    p = PEM(2**20, 3.0, step=4)
    heavy, share, items = _planted(rng, 100000)
    acc = p.add_reports(p.create_accumulator(), p.randomize(items, rng))
    for g in range(p.groups):
        pre = p.prefixes(heavy[:1], g)
        truth = np.mean(p.prefixes(items, g) == pre[0])
        f, se = p.estimate_prefixes(acc, g, pre)
        assert abs(f[0] - truth) < 5 * se[0], (g, f, truth, se)
    assert abs(acc.n_block - len(items) / p.groups).max() < 5 * math.sqrt(len(items) / p.groups)


@pytest.mark.parametrize("seed", range(3))
def test_discover_finds_planted_heavy_hitters(seed):
    """n = 2·10^5, ε = 4: the 5 planted items (4-10 %) are exactly the top 5; the intervals
    cover the truth (5 items x 3 seeds at 4 σ: false failure < 15·6e-5)."""
    rng = np.random.default_rng(seed)
    p = PEM(2**20, 4.0, step=4)
    heavy, share, items = _planted(rng, 200000)
    acc = p.add_reports(p.create_accumulator(), p.randomize(items, rng))
    d = discover(p, acc, top=5, z=4.0)
    assert sorted(d.items.tolist()) == sorted(heavy.tolist())
    truth = np.array([np.mean(items == x) for x in d.items])
    assert ((d.lower <= truth) & (truth <= d.upper)).all(), (d.estimates, truth)
    assert [lv["prefix_bits"] for lv in d.levels] == [4, 8, 12, 16, 20]


def test_merge_wire_config():
    rng = np.random.default_rng(1)
    p = PEM(2**12, 2.0, step=3, olh_limit=64, hashes=16, buckets=64)
    _, _, items = _planted(rng, 5000, k=2**12)
    batch = p.randomize(items, rng)
    whole = p.add_reports(p.create_accumulator(), batch)
    parts = [p.add_reports(p.create_accumulator(), batch.take(s))
             for s in np.array_split(rng.permutation(len(batch)), 4)]
    merged = p.merge(pickle.loads(pickle.dumps(a)) for a in parts[::-1])
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(merged.n_block, whole.n_block)
    assert_wire_round_trip(p, items, seed=1)
    again = assert_config_round_trip(p)
    assert [type(o) for o in p.oracles] == [OLH, OLH, HCMS, HCMS]
    assert (discover(again, merged, top=3).items == discover(p, whole, top=3).items).all()
