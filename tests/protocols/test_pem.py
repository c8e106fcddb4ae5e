"""PEM (prefix extension, SPEC §9): privacy by enumeration, prefix estimates under four
BitGenerators, discovery of planted heavy hitters, merge and wire contracts; each level oracle
(OLH, HCMS, MSS), MSS levels' unbiasedness and variance by Monte Carlo."""
import math
import pickle

import numpy as np
import pytest

from _baseline_contract import assert_config_round_trip, assert_wire_round_trip
from privfreq.protocols.cms import HCMS
from privfreq.protocols.mss import ModularSubsetSelection as MSS
from privfreq.protocols.olh import OLH
from privfreq.protocols.pem import PEM, discover
from privfreq.protocols.planner import best_moduli

BITGENS = [np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64]


@pytest.mark.parametrize("proto", [
    PEM(16, 1.2, step=1, start_bits=2, seed_bits=3),                               # OLH, OLH
    PEM(16, 1.2, step=2, start_bits=0, olh_limit=4, hashes=2, buckets=4, seed_bits=3),  # OLH, HCMS
    PEM(16, 1.2, step=2, start_bits=0, oracle="mss", mss_limit=16),                # MSS, MSS
    PEM(16, 1.2, step=2, start_bits=0, oracle="mss", mss_limit=4, hashes=2, buckets=4)])  # MSS, HCMS
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


def test_oracle_choice():
    assert [type(o) for o in PEM(2**12, 2.0, step=4, oracle="hcms").oracles] == [HCMS] * 3
    assert [type(o) for o in PEM(2**12, 2.0, step=4, oracle="olh", olh_limit=4096).oracles] \
        == [OLH] * 3
    m = PEM(2**12, 2.0, step=4, oracle="mss", mss_limit=256)
    assert [type(o) for o in m.oracles] == [MSS, MSS, HCMS]
    # moduli from the planner for each MSS level's prefix domain, stored in the config
    assert m.mss_moduli == (best_moduli(16, 2.0), best_moduli(256, 2.0))
    assert [o.moduli for o in m.oracles[:2]] == list(m.mss_moduli)
    assert m.to_params()["mss_moduli"] == [list(x) for x in m.mss_moduli]
    # wire blocks: each MSS level's ℓ blocks, then HCMS's one
    ells = [len(x) for x in m.mss_moduli]
    assert m.block_starts == (0, ells[0], ells[0] + ells[1], ells[0] + ells[1] + 1)
    assert m.locate(ells[0]) == (1, 0) and m.locate(m.n_blocks - 1) == (2, 0)
    assert "oracle" not in PEM(2**12, 2.0, step=4).to_params()   # default fingerprints unchanged
    with pytest.raises(ValueError, match="oracle must be one of"):
        PEM(2**12, 2.0, step=4, oracle="grr")
    with pytest.raises(ValueError, match="olh_limit"):
        PEM(2**12, 2.0, step=4, oracle="olh")
    with pytest.raises(ValueError, match="only used with oracle 'mss'"):
        PEM(2**12, 2.0, step=4, mss_moduli=[[7, 11, 13]])
    with pytest.raises(ValueError, match="must give 2 moduli lists"):
        PEM(2**12, 2.0, step=4, oracle="mss", mss_limit=256, mss_moduli=[[7, 11, 13]])
    with pytest.raises(ValueError, match="pairwise coprime"):
        PEM(2**12, 2.0, step=4, oracle="mss", mss_limit=16, mss_moduli=[[6, 9]])
    with pytest.raises(ValueError, match="list of integer lists"):
        PEM(2**12, 2.0, step=4, oracle="mss", mss_limit=16, mss_moduli=[7])


def test_mss_levels_unbiased_with_the_variance_of_their_oracle():
    """MSS at both levels (prefix domains 16 and 256), one fixed population of 4000 users, 200
    seeded runs. Mean: every prefix estimate's mean within 5 standard errors of the mean of the
    population's prefix share (t with 199 d.f., 272 prefixes: false failure < 272·1.3e-6 ≈ 4e-4).
    Variance: the run-to-run variance (averaged over prefixes) within 10 % of the prediction, the
    MSS standard error squared plus the group's sampling variance ``f(1−f)/n_g`` (users split among
    G = 2 groups); Monte-Carlo relative sd of that average <= sqrt(2/199)/sqrt(16) ≈ 2.5 %, so 10 %
    is 4σ (false failure ≈ 6e-5 per level)."""
    p = PEM(2**8, 2.0, step=4, oracle="mss")
    assert [type(o) for o in p.oracles] == [MSS, MSS]
    w = 1.0 / np.arange(1, 257) ** 1.1
    n = 4000
    items = np.random.default_rng(0).choice(256, n, p=w / w.sum())
    runs = 200
    est = [[] for _ in range(p.groups)]
    var = [[] for _ in range(p.groups)]
    for r in range(runs):
        rng = np.random.default_rng(100 + r)
        acc = p.add_reports(p.create_accumulator(), p.randomize(items, rng))
        for g in range(p.groups):
            f, se = p.estimate_prefixes(acc, g, np.arange(1 << p.prefix_length(g)))
            est[g].append(f)
            var[g].append(se**2)
    for g in range(p.groups):
        size = 1 << p.prefix_length(g)
        truth = np.bincount(p.prefixes(items, g), minlength=size) / n
        e = np.array(est[g])
        t = (e.mean(axis=0) - truth) / (e.std(axis=0, ddof=1) / math.sqrt(runs))
        assert np.abs(t).max() < 5, (g, np.abs(t).max())
        predicted = np.mean(var[g], axis=0) + truth * (1 - truth) / (n / p.groups)
        ratio = e.var(axis=0, ddof=1).mean() / predicted.mean()
        assert abs(ratio - 1) < 0.10, (g, ratio)


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


@pytest.mark.parametrize("seed, oracle", [(0, "auto"), (1, "auto"), (2, "auto"), (0, "mss")])
def test_discover_finds_planted_heavy_hitters(seed, oracle):
    """n = 2·10^5, ε = 4: the 5 planted items (4-10 %) are exactly the top 5; the intervals
    cover the truth (5 items x 4 runs at 4 σ: false failure < 20·6e-5)."""
    rng = np.random.default_rng(seed)
    p = PEM(2**20, 4.0, step=4, oracle=oracle)
    heavy, share, items = _planted(rng, 200000)
    acc = p.add_reports(p.create_accumulator(), p.randomize(items, rng))
    d = discover(p, acc, top=5, z=4.0)
    assert sorted(d.items.tolist()) == sorted(heavy.tolist())
    truth = np.array([np.mean(items == x) for x in d.items])
    assert ((d.lower <= truth) & (truth <= d.upper)).all(), (d.estimates, truth)
    assert [lv["prefix_bits"] for lv in d.levels] == [4, 8, 12, 16, 20]


def _merged_shards(p, batch, rng):
    """(one accumulator of ``batch``, four random shards pickled and merged in reverse); they
    must be equal."""
    whole = p.add_reports(p.create_accumulator(), batch)
    parts = [p.add_reports(p.create_accumulator(), batch.take(s))
             for s in np.array_split(rng.permutation(len(batch)), 4)]
    merged = p.merge(pickle.loads(pickle.dumps(a)) for a in parts[::-1])
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(merged.n_block, whole.n_block)
    return whole, merged


def test_merge_wire_config():
    rng = np.random.default_rng(1)
    p = PEM(2**12, 2.0, step=3, olh_limit=64, hashes=16, buckets=64)
    _, _, items = _planted(rng, 5000, k=2**12)
    batch = p.randomize(items, rng)
    whole, merged = _merged_shards(p, batch, rng)
    assert_wire_round_trip(p, items, seed=1)
    again = assert_config_round_trip(p)
    assert [type(o) for o in p.oracles] == [OLH, OLH, HCMS, HCMS]
    assert (discover(again, merged, top=3).items == discover(p, whole, top=3).items).all()


def test_merge_wire_config_with_mss_levels():
    """MSS levels: wire blocks per (level, MSS block), values padded with -1, exact merge, the
    planned moduli survive the config round trip (no re-planning), support = the MSS subsets."""
    rng = np.random.default_rng(2)
    p = PEM(2**12, 2.0, step=3, oracle="mss", mss_limit=64, hashes=16, buckets=64)
    assert [type(o) for o in p.oracles] == [MSS, MSS, HCMS, HCMS]
    _, _, items = _planted(rng, 5000, k=2**12)
    batch = assert_wire_round_trip(p, items, seed=2)
    assert batch.values.shape[1] == p.values_width > 1
    hcms_rows = batch.block >= p.block_starts[2]
    assert (batch.values[hcms_rows, 1:] == -1).all()
    whole, merged = _merged_shards(p, batch, rng)
    assert whole.n_block.sum() == len(items) and len(whole.n_block) == p.n_blocks
    assert sum(p.group_reports(whole, g) for g in range(p.groups)) == len(items)
    again = assert_config_round_trip(p)
    assert again.mss_moduli == p.mss_moduli
    assert (discover(again, merged, top=3).items == discover(p, whole, top=3).items).all()
    # the attack's support: a report supports an item iff its prefix's residue is in the subset
    small = PEM(64, 2.0, step=3, oracle="mss")
    b = small.randomize(np.arange(64).repeat(4), rng)
    sup = small._support(b, np.arange(64))
    for i in range(0, len(b), 37):
        g, j = small.locate(int(b.block[i]))
        o = small.oracles[g]
        z = set(b.values[i, :o.blocks[j].omega].tolist())
        pre = small.prefixes(np.arange(64), g)
        assert sup[i].tolist() == [int(v) % o.moduli[j] in z for v in pre]
