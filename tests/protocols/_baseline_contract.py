"""Shared checks of SPEC §6 for the baseline protocols (imported by tests/protocols/test_*.py).

Each helper takes a protocol instance and asserts one part of the contract. Statistical helpers
state their false-failure probability; every caller passes a fixed seed, so CI is deterministic.
"""
from __future__ import annotations

import contextlib
import math
import pickle
import signal

import numpy as np
import pytest
from scipy import stats

# Per-call false-failure probability of the statistical checks below (normal / chi-square tails).
CHI2_ALPHA = 1e-4       # sampling check: P(p-value < alpha | randomize correct) = 1e-4
Z_MAX = 4.5             # unbiasedness: two-sided 4.5σ per item, 6.8e-6 per item (Bonferroni)
VAR_SIGMAS = 5.0        # variance: 5σ on the total squared error, ~6e-7 under normal approx

# Every numpy BitGenerator the samplers are checked under.
BIT_GENERATORS = {"pcg64": np.random.PCG64, "mt19937": np.random.MT19937,
                  "philox": np.random.Philox, "sfc64": np.random.SFC64}


@contextlib.contextmanager
def deadline(seconds):
    """Fail the test, instead of hanging, when the block runs longer than ``seconds`` (SIGALRM)."""
    def expire(signum, frame):
        pytest.fail(f"no result within {seconds} s (sampler loop does not end)", pytrace=False)
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_exact_privacy(proto, items=None, epsilon=None, dist=None):
    """SPEC §6.1: max over outputs and input pairs of P(y|x)/P(y|x') equals e^ε, never above.

    ``dist(item)`` defaults to ``proto.output_distribution``; ``epsilon`` to ``proto.epsilon``.
    """
    items = range(proto.k) if items is None else items
    dist = proto.output_distribution if dist is None else dist
    eps = proto.epsilon if epsilon is None else epsilon
    dists = [dist(x) for x in items]
    keys = sorted(set().union(*dists), key=repr)
    mat = np.array([[d.get(y, 0.0) for y in keys] for d in dists])
    np.testing.assert_allclose(mat.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (mat > 0).all(), "an output impossible under some input: the ratio is unbounded"
    ratio = float((mat.max(axis=0) / mat.min(axis=0)).max())
    bound = math.exp(eps)
    assert ratio <= bound * (1 + 1e-9), f"privacy loss {math.log(ratio)} > ε = {eps}"
    assert ratio >= bound * (1 - 1e-9), f"privacy loss {math.log(ratio)} < ε = {eps} (not tight)"
    return ratio


def assert_sampler_matches(proto, item, keys_of, n, seed, dist=None, sampler=None):
    """Chi-square goodness of fit of ``randomize`` against ``output_distribution`` for one item.

    ``keys_of(batch)`` maps a ReportBatch to a list of output keys. Cells with expected count
    below 5 are pooled into one cell. False-failure probability: CHI2_ALPHA = 1e-4.
    """
    rng = np.random.default_rng(seed)
    sampler = proto.randomize if sampler is None else sampler
    batch = sampler(np.full(n, item, dtype=np.int64), rng)
    dist = proto.output_distribution(item) if dist is None else dist
    observed = {}
    for key in keys_of(batch):
        observed[key] = observed.get(key, 0) + 1
    assert set(observed) <= set(dist), f"outputs outside the support: {set(observed) - set(dist)}"
    keys = list(dist)
    expected = np.array([dist[key] * n for key in keys])
    obs = np.array([observed.get(key, 0) for key in keys], dtype=np.float64)
    small = expected < 5
    if small.any():
        expected = np.append(expected[~small], expected[small].sum())
        obs = np.append(obs[~small], obs[small].sum())
    obs_sum, exp_sum = obs.sum(), expected.sum()
    expected *= obs_sum / exp_sum  # exp_sum == n up to rounding
    pvalue = stats.chisquare(obs, expected).pvalue
    assert pvalue > CHI2_ALPHA, f"randomize() does not match output_distribution (p = {pvalue})"


def run_estimates(proto, items, runs, seed):
    """``runs`` independent collections of ``items``: array ``[runs, k]`` of raw estimates."""
    rng = np.random.default_rng(seed)
    out = np.empty((runs, proto.k))
    for r in range(runs):
        acc = proto.add_reports(proto.create_accumulator(), proto.randomize(items, rng))
        out[r] = proto.estimate(acc).frequencies
    return out


def items_for(f_counts):
    """Items array with ``f_counts[x]`` users holding item x."""
    return np.repeat(np.arange(len(f_counts)), f_counts).astype(np.int64)


def assert_unbiased_and_variance(proto, counts, runs, seed, var_fn=None):
    """SPEC §6.2 and §6.3 from one set of seeded runs.

    Unbiasedness: every item's mean estimate lies within Z_MAX analytic standard errors of f
    (false failure <= k · 6.8e-6). Variance: the total squared error over items and runs is within
    VAR_SIGMAS·sd of ``runs · Σ_x Var_x``, with sd = sqrt(2 runs Σ_x Var_x²) (Gaussian errors,
    cross-item covariance neglected: it is O(1/k) here); false failure ~ 6e-7.
    """
    counts = np.asarray(counts)
    n = int(counts.sum())
    f = counts / n
    est = run_estimates(proto, items_for(counts), runs, seed)
    var = np.asarray(proto.variance(n, f) if var_fn is None else var_fn(n, f))
    z = (est.mean(axis=0) - f) / np.sqrt(var / runs)
    assert np.abs(z).max() < Z_MAX, f"biased: max |z| = {np.abs(z).max():.2f} at {np.abs(z).argmax()}"
    sq = ((est - f) ** 2).sum()
    expect = runs * var.sum()
    sd = math.sqrt(2 * runs * (var ** 2).sum())
    assert abs(sq - expect) < VAR_SIGMAS * sd + 0.01 * expect, (
        f"empirical total variance {sq / runs:.4g} vs analytic {var.sum():.4g}")
    return est


def assert_merge_contract(proto, items, seed, shards=7):
    """SPEC §6.4: pickle round trip; merge of a generator; random shards in random order equal one
    pass bit for bit, same dtype."""
    rng = np.random.default_rng(seed)
    batch = proto.randomize(items, rng)
    clone = pickle.loads(pickle.dumps(proto))
    assert clone == proto
    one = proto.add_reports(proto.create_accumulator(), batch)
    cuts = np.sort(rng.choice(np.arange(1, len(batch)), shards - 1, replace=False))
    perm = rng.permutation(len(batch))
    parts = np.split(perm, cuts)
    accs = [clone.add_reports(clone.create_accumulator(), batch.take(idx)) for idx in parts]
    order = rng.permutation(len(accs))
    merged = clone.merge(accs[i] for i in order)
    assert merged.counts.dtype == one.counts.dtype == np.int64
    assert np.array_equal(merged.counts, one.counts)
    assert np.array_equal(merged.n_block, one.n_block)
    np.testing.assert_array_equal(proto.estimate(merged).frequencies,
                                  proto.estimate(one).frequencies)
    empty = proto.merge(iter([]))
    assert empty.counts.shape == proto.count_shape() and not empty.counts.any()
    return one


def assert_wire_round_trip(proto, items, seed):
    """Encode every block's reports and decode them back: same values, all ``Reason.OK``."""
    batch = proto.randomize(items, np.random.default_rng(seed))
    for b in range(proto.n_blocks):
        rows = np.nonzero(batch.block == b)[0]
        values = batch.values[rows]
        raw = proto.encode_payloads(b, values)
        assert raw.dtype == np.uint8 and raw.shape == (len(rows), proto.payload_width(b))
        dec, reason = proto.decode_payloads(b, raw)
        assert (reason == 0).all()
        np.testing.assert_array_equal(dec, values)
        assert dec.dtype == values.dtype
    return batch


def assert_config_round_trip(proto):
    """The protocol survives its collection config's JSON and a pickle round trip unchanged."""
    from privfreq.protocols.config import CollectionConfig
    again = CollectionConfig.from_json(CollectionConfig.of(proto).to_json()).protocol
    assert again == proto and pickle.loads(pickle.dumps(proto)) == proto
    return again
