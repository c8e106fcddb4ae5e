"""SPEC §6 checks for ProjectiveGeometryResponse (protocols/pgr.py)."""
import math
import pickle

import numpy as np
import pytest

from _baseline_contract import (assert_exact_privacy, assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip)
from privfreq.protocols import get_protocol_class
from privfreq.protocols.base import Counts, Reason
from privfreq.protocols.pgr import Geometry, ProjectiveGeometryResponse as PGR, smallest_prime_at_least


def test_registered():
    assert get_protocol_class("pgr") is PGR


def test_primes():
    assert [smallest_prime_at_least(m) for m in (0, 2, 3, 4, 8, 24, 56, 90)] == \
        [2, 2, 3, 5, 11, 29, 59, 97]


@pytest.mark.parametrize("k,eps,q,t,K", [(1024, 1.0, 5, 6, 3906), (1024, 4.0, 59, 3, 3541),
                                         (22000, 4.5, 97, 4, 922180), (3, 0.1, 3, 2, 4)])
def test_geometry_constants(k, eps, q, t, K):
    p = PGR(k, eps)
    assert (p.q, p.t, p.K) == (q, t, K)
    assert p.cset == (q ** (t - 1) - 1) // (q - 1) and p.cint == (q ** (t - 2) - 1) // (q - 1)


@pytest.mark.parametrize("q,t", [(2, 3), (3, 3), (5, 2), (3, 4)])
def test_geometry_tables(q, t):
    geo = Geometry(q, t)
    d = geo.digits(np.arange(geo.K))
    # canonical: first nonzero coordinate is 1; all distinct; index round trip, also from multiples
    lead = d[np.arange(geo.K), (d != 0).argmax(axis=1)]
    assert (lead == 1).all() and len({tuple(r) for r in d}) == geo.K
    for a in range(1, q):
        np.testing.assert_array_equal(geo.index_of((a * d) % q), np.arange(geo.K))
    members = geo.support_members()
    cset, cint = (q ** (t - 1) - 1) // (q - 1), (q ** (t - 2) - 1) // (q - 1)
    assert members.shape == (geo.K, cset)
    onehot = np.zeros((geo.K, geo.K), int)
    onehot[np.arange(geo.K)[:, None], members] = 1
    inter = onehot @ onehot.T
    assert (np.diag(inter) == cset).all()
    assert (inter[~np.eye(geo.K, dtype=bool)] == cint).all()


@pytest.mark.parametrize("k,eps", [(4, 0.5), (13, 1.0), (6, 2.0), (40, 3.0)])
def test_fast_decoder_matches_naive(k, eps):
    p = PGR(k, eps)
    rng = np.random.default_rng(k)
    counts = rng.integers(0, 1000, p.K)
    acc = Counts(counts, np.array([counts.sum()]))
    np.testing.assert_array_equal(p.support_sums(acc), p.naive_support_sums(acc))


@pytest.mark.parametrize("k,eps", [(3, 0.5), (9, 1.0), (12, 2.0), (5, 3.0)])
def test_exact_privacy(k, eps):
    assert_exact_privacy(PGR(k, eps))


def test_padding_items_are_outputs_but_never_estimated():
    p = PGR(9, 1.0)              # q = 5; t = 2 gives K = 6 < 9, so t = 3 and K = 31
    assert p.K == 31 and len(p.output_distribution(0)) == 31
    b = p.randomize(np.zeros(20_000, np.int64), np.random.default_rng(31))
    assert b.values.max() >= 9 and b.values.max() < 31
    acc = p.add_reports(p.create_accumulator(), b)
    assert p.estimate(acc).frequencies.shape == (9,)


def test_sampler_matches_distribution():
    p = PGR(10, 1.5)
    assert_sampler_matches(p, 7, lambda b: b.values[:, 0].tolist(), 40_000, seed=32)


def test_unbiased_and_variance():
    counts = np.array([400, 250, 150, 100, 60, 40, 0, 0, 0, 0, 0, 0, 0])
    assert_unbiased_and_variance(PGR(13, 1.0), counts, runs=400, seed=33)


def test_variance_near_optimal():
    e = math.exp(4.0)
    assert abs(PGR(1024, 4.0).variance(1)[0] / (4 * e / (e - 1) ** 2) - 1) < 0.02


def test_merge_contract_and_lazy_tables_not_pickled():
    p = PGR(50, 2.0)
    p.geometry  # build the tables
    assert "geometry" in p.__dict__
    blob = pickle.dumps(p)
    assert b"orbit0" not in blob and len(blob) < 2000
    items = np.random.default_rng(34).integers(0, 50, 3000)
    assert_merge_contract(p, items, seed=35)


@pytest.mark.parametrize("k,eps", [(20, 12.0), (500, 2.0)])
def test_fraction_in_support_is_s(k, eps):
    # Binomial(20000, s): 5 sd tolerance, false failure ~ 6e-7
    p = PGR(k, eps)
    items = np.arange(20_000) % k
    y = p.randomize(items, np.random.default_rng(36)).values[:, 0]
    d = p.geometry.digits(np.arange(p.K))
    frac = (((d[y] * d[items]).sum(axis=1) % p.q) == 0).mean()
    assert abs(frac - p.s) < 5 * math.sqrt(p.s * (1 - p.s) / len(items))


def test_wire_round_trip_and_rejection():
    p = PGR(1024, 4.0)
    assert p.payload_width(0) == 2 and p.information_bits() == 12
    assert_wire_round_trip(p, np.arange(1024), seed=37)
    raw = np.array([[0xD4, 0x0D], [0xD5, 0x0D]], np.uint8)      # 3540 ok, 3541 = K out of range
    _, reason = p.decode_payloads(0, raw)
    assert list(reason) == [0, Reason.VALUE_OUT_OF_RANGE]


@pytest.mark.parametrize("bad", [dict(k=1, epsilon=1.0), dict(k=5, epsilon=0.0),
                                 dict(k=5, epsilon=20.0), dict(k=2**33, epsilon=1.0)])
def test_validation(bad):
    with pytest.raises(ValueError):
        PGR(**bad)
