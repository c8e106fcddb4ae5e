"""Several attributes per user (SPEC §8): tuple-level privacy by enumeration, the randomizers
against their enumerated distributions, unbiasedness and variance against simulation, merge and
wire contracts, bad input."""
import itertools
import math
import pickle

import numpy as np
import pytest
from scipy import stats

from privfreq.protocols.base import Reason, ReportBatch
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.multidim import (ALLOMFREE, AUTO_TIE, RSFD, SMP, SPL, choose_inner,
                                         rsfd_epsilon)


def tuples(domains):
    return list(itertools.product(*[range(k) for k in domains]))


def enumerated_epsilon(protocol, dist=None, pairs=None):
    """max over outputs and tuple pairs of ln P(y|v)/P(y|v′), from ``output_distribution``."""
    dist = dist or protocol.output_distribution
    vs = tuples(protocol.domains)
    table = [dist(v) for v in vs]
    for t in table:
        assert sum(t.values()) == pytest.approx(1.0, abs=1e-12)
    outputs = set().union(*table)
    worst = 0.0
    for a, b in (pairs or itertools.permutations(range(len(vs)), 2)):
        for y in outputs:
            pa, pb = table[a].get(y, 0.0), table[b].get(y, 0.0)
            if pa > 0:
                assert pb > 0, (vs[a], vs[b], y)
                worst = max(worst, math.log(pa / pb))
    return worst


SMALL = {
    "spl-grr": lambda: SPL(("a", "b"), (3, 2), 1.0, inner="grr"),
    "spl-oue": lambda: SPL(("a", "b"), (3, 2), 1.0, inner=["oue", "grr"]),
    "smp-grr": lambda: SMP(("a", "b", "c"), (3, 2, 4), 1.0, inner="grr"),
    "smp-mixed": lambda: SMP(("a", "b"), (3, 4), 2.0, inner=["oue", "ss"]),
    "rsfd-grr": lambda: RSFD(("a", "b", "c"), (3, 2, 4), 1.0),
    "rsfd-oue-z": lambda: RSFD(("a", "b"), (2, 3), 1.0, fake="oue-z"),
    "rsfd-oue-r": lambda: RSFD(("a", "b"), (2, 3), 1.0, fake="oue-r"),
    "allomfree": lambda: ALLOMFREE(("a", "b"), (3, 4), 1.0, epsilon_perm=2.0, inner=["lgrr", "losue"]),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_tuple_epsilon_by_enumeration(name):
    p = SMALL[name]()
    assert enumerated_epsilon(p) == pytest.approx(p.tuple_epsilon, rel=1e-9)
    if name.startswith("rsfd"):
        assert p.tuple_epsilon == pytest.approx(math.log(p.d * math.expm1(1.0) + 1))
    if name == "allomfree":
        assert enumerated_epsilon(p, p.permanent_distribution) == pytest.approx(2.0, rel=1e-9)


def test_rsfd_epsilon_spec_numbers():
    """SPEC §8: d = 3, k = (3, 2, 4), ε = 1: 1.817 between arbitrary tuples, and 1.124 between
    tuples differing in one attribute (unequal k_j: more than ε)."""
    p = RSFD(("a", "b", "c"), (3, 2, 4), 1.0)
    assert round(enumerated_epsilon(p), 3) == 1.817
    vs = tuples(p.domains)
    one = [(i, j) for i, j in itertools.permutations(range(len(vs)), 2)
           if sum(x != y for x, y in zip(vs[i], vs[j])) == 1]
    assert round(enumerated_epsilon(p, pairs=one), 3) == 1.124
    assert rsfd_epsilon(1.0, 3) == pytest.approx(1.8172, abs=1e-4)


def _output_keys(p, batch):
    """Each report as an ``output_distribution`` key (GRR/L-GRR: the value; UE: the bit tuple)."""
    def inner_key(proto, row):
        if proto.protocol_id in ("grr", "lgrr"):
            return int(row[0])
        return tuple(np.unpackbits(row, count=proto.k, bitorder="little").tolist())

    keys = [None] * len(batch)
    if hasattr(p, "_inner_batches"):
        for rows, j, inner in p._inner_batches(batch):
            for r, v in zip(rows.tolist(), inner.values):
                keys[r] = (j, inner_key(p.inner_protocols[j], v))
        return keys
    per = []
    for j, seg in enumerate(p._segments):
        col = [None] * len(batch)
        for rows, inner in seg.read(p._segment_values(j, batch.values))[0]:
            for r, v in zip(rows.tolist(), inner.values):
                col[r] = inner_key(p.inner_protocols[j], v)
        per.append(col)
    return list(zip(*per))


@pytest.mark.parametrize("name", ["spl-grr", "smp-grr", "rsfd-grr", "rsfd-oue-z", "rsfd-oue-r",
                                  "allomfree"])
def test_randomizer_follows_the_enumerated_distribution(name):
    """Chi-square goodness of fit of 40 000 reports of one tuple against ``output_distribution``
    (so the enumeration above is about the code that runs). False failure: 1e-4 per case."""
    p = SMALL[name]()
    rng = np.random.default_rng(sorted(SMALL).index(name))
    v = tuple(k - 1 for k in p.domains)
    dist = p.output_distribution(v)
    n = 40_000
    keys = _output_keys(p, p.randomize(np.tile(v, (n, 1)), rng))
    outputs = sorted(dist, key=repr)
    index = {y: i for i, y in enumerate(outputs)}
    observed = np.bincount([index[y] for y in keys], minlength=len(outputs))
    expected = n * np.array([dist[y] for y in outputs])
    big = expected >= 5
    obs = np.r_[observed[big], observed[~big].sum()]
    exp = np.r_[expected[big], expected[~big].sum()]
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert stats.chisquare(obs, exp).pvalue > 1e-4


def _runs(p, n, runs, seed):
    """A fixed population of n users, its true frequencies, and ``runs`` randomizations of it:
    yields (truth, one run's merged counts)."""
    rng = np.random.default_rng(seed)
    x = _population(p.domains, n, rng)
    truth = np.concatenate([np.bincount(x[:, j], minlength=k) / n
                            for j, k in enumerate(p.domains)])
    batch = p.randomize(np.tile(x, (runs, 1)), rng)
    for r in range(runs):
        yield truth, p.add_reports(p.create_accumulator(), batch.take(slice(r * n, (r + 1) * n)))


def _population(domains, n, rng):
    """A fixed population: Zipf-like values per attribute, attribute 1 correlated with 0."""
    cols = []
    for j, k in enumerate(domains):
        w = 1.0 / np.arange(1, k + 1) ** 1.1
        col = rng.choice(k, n, p=w / w.sum())
        if j == 1:
            col = np.where(rng.random(n) < 0.5, cols[0] % k, col)
        cols.append(col)
    return np.stack(cols, 1)


MC = {
    "spl": lambda: SPL(("a", "b", "c"), (4, 6, 12), 2.0, inner=["grr", "oue", "ss"]),
    "smp": lambda: SMP(("a", "b", "c"), (4, 6, 12), 2.0),
    "smp-olh-mss": lambda: SMP(("a", "b", "c"), (4, 6, 12), 2.0,
                               inner=["olh", "oue", {"protocol": "mss", "params": {"moduli": [4, 5, 7]}}]),
    "rsfd-grr": lambda: RSFD(("a", "b", "c"), (4, 6, 12), 2.0),
    "rsfd-oue-z": lambda: RSFD(("a", "b", "c"), (4, 6, 12), 2.0, fake="oue-z"),
    "rsfd-oue-r": lambda: RSFD(("a", "b", "c"), (4, 6, 12), 2.0, fake="oue-r"),
    "allomfree": lambda: ALLOMFREE(("a", "b", "c"), (4, 6, 12), 2.0, epsilon_perm=3.0),
}


@pytest.mark.parametrize("name", sorted(MC))
def test_unbiased_and_variance_match_simulation(name):
    """R = 400 runs over one fixed population of n = 2000 users. Per item, the mean error is
    within 4.5 standard errors of 0 (22 items: false failure < 22·7e-6); per attribute, the mean
    squared error over runs ÷ ``variance(n, f)`` (mean over the attribute's items) is within
    [0.8, 1.2]: each item's MSE has relative sd sqrt(2/400) = 7 % and an attribute averages
    4–12 items, so 20 % is more than 4 sd of the ratio. The formula is independent of the
    simulation: it is the closed form of SPEC §8 (split term and fixed-population RS+FD)."""
    p = MC[name]()
    n, runs = 2000, 400
    est = np.empty((runs, p.k))
    for r, (truth, acc) in enumerate(_runs(p, n, runs, seed=11)):
        est[r] = p.estimate(acc, stderr=False).frequencies
    var = p.variance(n, truth)
    err = est - truth
    z = err.mean(axis=0) / np.sqrt(var / runs)
    assert np.abs(z).max() < 4.5, (name, z)
    for j in range(p.d):
        sl = p.attribute_slice(j)
        ratio = np.mean(err[:, sl] ** 2) / np.mean(var[sl])
        assert 0.8 < ratio < 1.2, (name, p.attributes[j], ratio)


def test_stderr_covers_the_truth():
    """±2 stderr covers about 95 % of items over runs (plug-in stderr incl. the split term);
    SMP, 200 runs × 22 items: the coverage has sd ≈ 0.5 %, the band [92 %, 98 %] is 6 sd."""
    p = MC["smp"]()
    n, runs = 4000, 200
    hits = 0
    for truth, acc in _runs(p, n, runs, seed=5):
        e = p.estimate(acc)
        hits += int((np.abs(e.frequencies - truth) <= 2 * e.stderr).sum())
    assert 0.92 < hits / (runs * p.k) < 0.98


@pytest.mark.parametrize("name", sorted(MC))
def test_merge_wire_and_config_round_trip(name):
    """Random shards merged in any order equal one accumulator; reports through
    encode_payloads/decode_payloads count the same; the config (auto resolved) round-trips with
    a stable fingerprint; pickling keeps the protocol."""
    p = MC[name]()
    rng = np.random.default_rng(3)
    x = _population(p.domains, 3000, rng)
    batch = p.randomize(x, rng)
    whole = p.add_reports(p.create_accumulator(), batch)
    cut = np.sort(rng.choice(np.arange(1, len(batch)), 4, replace=False))
    shards = [p.add_reports(p.create_accumulator(), batch.take(idx))
              for idx in np.split(rng.permutation(len(batch)), cut)]
    merged = p.merge(shards[::-1])
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(merged.n_block, whole.n_block)
    wire = p.create_accumulator()
    for b in range(p.n_blocks):
        rows = np.flatnonzero(batch.block == b)
        raw = p.encode_payloads(b, batch.values[rows])
        assert raw.shape[1] == p.payload_width(b)
        vals, why = p.decode_payloads(b, raw)
        assert (np.asarray(why) == Reason.OK).all()
        p.add_reports(wire, ReportBatch(batch.block[rows], batch.seed[rows], vals))
    np.testing.assert_array_equal(wire.counts, whole.counts)
    cfg = CollectionConfig.of(p)
    again = CollectionConfig.from_json(cfg.to_json())
    assert again.fingerprint == cfg.fingerprint and again.protocol.inner_protocols == p.inner_protocols
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(p)).estimate(whole).frequencies,
                                  p.estimate(whole).frequencies)


def test_sampled_blocks_map_attribute_and_inner_block():
    p = SMP(("a", "b"), (5, 14), 1.0, inner=["grr", {"protocol": "mss", "params": {"moduli": [7, 8]}}])
    assert p.n_blocks == 3 and p.wire_attributes == 2
    np.testing.assert_array_equal(p.flat_block([0, 1, 1, 0, 2, 1, -1], [0, 0, 1, 1, 0, 2, 0]),
                                  [0, 1, 2, -1, -1, -1, -1])
    a, b = p.wire_block(np.array([0, 1, 2]))
    np.testing.assert_array_equal(a, [0, 1, 1])
    np.testing.assert_array_equal(b, [0, 0, 1])


def test_hostile_segments_are_rejected():
    """SPL segments are checked by their inner protocol: block header, value range, padding."""
    p = SPL(("a", "b"), (5, 14), 4.0, inner=["grr", {"protocol": "mss", "params": {"moduli": [7, 8]}}])
    rng = np.random.default_rng(0)
    good = p.randomize(np.array([[1, 3], [4, 13]]), rng).values
    bad_value = good.copy()
    bad_value[:, 0] = 5                       # GRR value outside [0, 5)
    bad_block = good.copy()
    bad_block[:, 1] = 2                       # MSS block 2 of 2
    _, ok = p.decode_payloads(0, good)
    assert (ok == Reason.OK).all()
    assert (p.decode_payloads(0, bad_value)[1] == Reason.VALUE_OUT_OF_RANGE).all()
    assert (p.decode_payloads(0, bad_block)[1] == Reason.BLOCK_OUT_OF_RANGE).all()
    assert (p.decode_payloads(0, good[:, :-1])[1] == Reason.BAD_LENGTH).all()
    seg = p._segments[1]
    if seg.width > seg.hb + seg.sb + min(seg.pw):   # a shorter block leaves padding to check
        short = int(np.argmin(seg.pw))
        row = good[:1].copy()
        row[0, p._seg_starts[1]] = short
        row[0, -1] = 1
        assert p.decode_payloads(0, row)[1][0] != Reason.OK


@pytest.mark.parametrize("kwargs, match", [
    ({"attributes": ["a", "a"], "domains": [3, 4]}, "duplicate attribute"),
    ({"attributes": ["a", "b"], "domains": [3, 1]}, "domain k >= 2"),
    ({"attributes": ["a", "b"], "domains": [3]}, "same length"),
    ({"attributes": ["a", " b"], "domains": [3, 4]}, "surrounding spaces"),
    ({"attributes": ["a", "b"], "domains": [3, 4], "inner": ["grr"]}, "one entry per attribute"),
    ({"attributes": ["a", "b"], "domains": [3, 4], "inner": "smp"}, "multi-attribute"),
    ({"attributes": ["a", "b"], "domains": [3, 4], "inner": "nope"}, "unknown id"),
])
def test_bad_configs_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SMP(epsilon=1.0, **kwargs)


def test_bad_rsfd_allomfree_and_items():
    with pytest.raises(ValueError, match="fake must be one of"):
        RSFD(("a", "b"), (3, 4), 1.0, fake="oue")
    with pytest.raises(ValueError, match="must be one of"):
        ALLOMFREE(("a", "b"), (3, 4), 1.0, epsilon_perm=2.0, inner="grr")
    p = SMP(("age", "country"), (3, 4), 1.0, inner="grr")
    with pytest.raises(ValueError, match="'country': row 1 holds 4"):
        p.randomize(np.array([[0, 0], [1, 4]]), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        p.randomize(np.array([0, 1]), np.random.default_rng(0))


def test_auto_picks_the_least_variance_inner():
    """``auto``: GRR on small domains, a unary/subset protocol on large ones (SPEC §8: GRR iff
    k < 3e^ε + 2 against OUE), never more than ``AUTO_TIE`` above OUE's variance; near-ties go
    to the cheaper protocol (at k = 22000, ε = 1/3: not SS, whose variance is 0.02 % lower for
    10-20x the time); ALLOMFREE: L-GRR or L-OSUE by variance."""
    p = SMP(("small", "large"), (4, 200), 1.0)
    ids = [q.protocol_id for q in p.inner_protocols]
    assert ids[0] == "grr" and ids[1] != "grr"
    for q in p.inner_protocols:
        oue = SMP(("x", "y"), (q.k, 2), 1.0, inner="oue").inner_protocols[0]
        assert q.variance(1000)[0] <= oue.variance(1000)[0] * AUTO_TIE
    assert choose_inner(22000, 1 / 3)[0] not in ("ss", "ass")
    a = ALLOMFREE(("small", "large"), (3, 200), 1.0, epsilon_perm=2.0)
    assert [q.protocol_id for q in a.inner_protocols] == ["lgrr", "losue"]


def test_rsfd_variance_is_the_fixed_population_one():
    """RS+FD at ε = 6 (GRR fake, k = 4 each), 2000 runs over one population of 2000 users: the
    mean over items of the MSE ÷ ``variance(n, f)`` is 1 within 4 standard errors (the standard
    error from the runs themselves; false failure 6e-5), and SPEC's i.i.d. form
    ``d²δ(1−δ)/(n(p−q)²)``, larger by ``f(1−f)/n``, is rejected by the same test."""
    p = RSFD(("a", "b", "c"), (4, 4, 4), 6.0)
    n, runs = 2000, 2000
    sq = np.empty(runs)
    for r, (truth, acc) in enumerate(_runs(p, n, runs, seed=21)):
        sq[r] = np.mean((p.estimate(acc, stderr=False).frequencies - truth) ** 2)
    se = sq.std(ddof=1) / np.sqrt(runs)
    fixed = np.mean(p.variance(n, truth))
    iid = fixed + np.mean(truth * (1 - truth)) / n
    assert abs(sq.mean() - fixed) < 4 * se, (sq.mean(), fixed, se)
    assert abs(sq.mean() - iid) > 4 * se, (sq.mean(), iid, se)
