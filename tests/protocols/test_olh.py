"""SPEC §6 checks for OLH (protocols/olh.py) and its hash family (protocols/hashing.py)."""
import math

import numpy as np
import pytest

from _baseline_contract import (assert_exact_privacy, assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip, items_for)
from privfreq.protocols import get_protocol_class
from privfreq.protocols.base import Reason
from privfreq.protocols.hashing import hash_to_range, item_offsets, seed_state
from privfreq.protocols.olh import OLH


def test_registered():
    assert get_protocol_class("olh") is OLH


@pytest.mark.parametrize("k,eps,bits", [(5, 1.0, 4), (6, 2.5, 3), (3, 0.3, 5)])
def test_exact_privacy_over_seed_and_value(k, eps, bits):
    assert_exact_privacy(OLH(k, eps, seed_bits=bits))


def test_sampler_matches_distribution():
    proto = OLH(5, 1.0, seed_bits=4)
    assert_sampler_matches(proto, 2, lambda b: list(zip(b.seed.tolist(), b.values[:, 0].tolist())),
                           40_000, seed=11)


def test_constants():
    proto = OLH(1000, 2.0)
    e = math.exp(2.0)
    assert proto.g == 8 and math.isclose(proto.p, e / (e + 7)) and proto.q == 1 / 8
    assert proto.uses_seed and proto.seed_bound() == 2**63
    # Var·n at f = 0 is close to 4e^ε/(e^ε−1)² (exact when e^ε + 1 is an integer)
    assert abs(proto.variance(1)[0] / (4 * e / (e - 1) ** 2) - 1) < 0.02


def test_hash_family_is_uniform_and_pairwise_collides_at_rate_one_over_g():
    g = 5
    seeds = np.arange(200_000)
    h = hash_to_range(seed_state(seeds)[:, None], item_offsets([0, 1, 977])[None, :], g)
    # each frequency ~ Binomial(2e5, 0.2): sd 0.0009, tolerance 5 sd (false failure ~ 1e-5)
    for col in range(3):
        assert np.abs(np.bincount(h[:, col], minlength=g) / len(seeds) - 1 / g).max() < 0.0045
    assert abs((h[:, 0] == h[:, 1]).mean() - 1 / g) < 0.0045
    assert abs((h[:, 1] == h[:, 2]).mean() - 1 / g) < 0.0045


def test_support_counts_match_direct_hashing():
    proto = OLH(50, 1.5)
    batch = proto.randomize(np.arange(50).repeat(7), np.random.default_rng(12))
    acc = proto.add_reports(proto.create_accumulator(), batch)
    h = proto.hash_items(batch.seed, np.arange(50))
    np.testing.assert_array_equal(acc.counts, (h == batch.values).sum(axis=0))


def test_unbiased_and_variance():
    counts = np.array([300, 200, 150, 100, 100, 50, 40, 30, 20, 10, 0, 0, 0, 0, 0, 0])
    assert_unbiased_and_variance(OLH(16, 1.0), counts, runs=400, seed=13)


def test_merge_contract():
    items = np.random.default_rng(14).integers(0, 40, 3000)
    assert_merge_contract(OLH(40, 2.0), items, seed=15)


def test_chunked_add_reports(monkeypatch):
    import privfreq.protocols.olh as mod
    proto = OLH(30, 1.0)
    batch = proto.randomize(np.arange(30).repeat(10), np.random.default_rng(16))
    full = proto.add_reports(proto.create_accumulator(), batch)
    monkeypatch.setattr(mod, "CHUNK_ELEMENTS", 45)   # chunks of 1 report
    np.testing.assert_array_equal(proto.add_reports(proto.create_accumulator(), batch).counts,
                                  full.counts)


def test_large_epsilon_limit():
    # OLH keeps p ~ 1/2 at any ε (g ~ e^ε), but with g ~ 4.9e8 other items are (almost) never hit:
    # P(any spurious support among 300·20 pairs) ~ 1.2e-5.
    proto = OLH(20, 20.0)
    assert abs(proto.p - 0.5) < 1e-8
    counts = np.zeros(20, int)
    counts[[3, 7]] = [200, 100]
    items = items_for(counts)
    batch = proto.randomize(items, np.random.default_rng(17))
    kept = batch.values[:, 0] == proto.hash_items(batch.seed, items).diagonal()
    assert abs(kept.mean() - 0.5) < 0.15      # Binomial(300, 1/2): 5.2 sd
    acc = proto.add_reports(proto.create_accumulator(), batch)
    assert acc.counts.sum() == kept.sum() and acc.counts[counts == 0].sum() == 0


def test_wire_round_trip_and_rejection():
    proto = OLH(100, 4.0)
    assert proto.g == 56 and proto.payload_width(0) == 1
    assert proto.information_bits() == 63 + 6
    assert_wire_round_trip(proto, np.arange(100), seed=18)
    raw = np.array([[0], [55], [56], [255]], np.uint8)
    _, reason = proto.decode_payloads(0, raw)
    assert list(reason) == [0, 0, Reason.VALUE_OUT_OF_RANGE, Reason.VALUE_OUT_OF_RANGE]
    big = OLH(10, 7.0)     # g = 1098: two-byte index
    assert big.payload_width(0) == 2
    _, reason = big.decode_payloads(0, np.array([[0x49, 0x04], [0x4A, 0x04]], np.uint8))
    assert list(reason) == [0, Reason.VALUE_OUT_OF_RANGE]   # 1097 valid, 1098 not


def test_small_seed_space_randomize_respects_bound():
    proto = OLH(5, 1.0, seed_bits=3)
    b = proto.randomize(np.zeros(1000, np.int64), np.random.default_rng(19))
    assert b.seed.min() >= 0 and b.seed.max() < 8 and len(np.unique(b.seed)) == 8


@pytest.mark.parametrize("bad", [dict(k=1, epsilon=1.0), dict(k=5, epsilon=-1.0),
                                 dict(k=5, epsilon=1.0, seed_bits=0),
                                 dict(k=5, epsilon=1.0, seed_bits=64),
                                 dict(k=5, epsilon=30.0)])
def test_validation(bad):
    with pytest.raises(ValueError):
        OLH(**bad)


def test_output_distribution_refuses_huge_seed_space():
    with pytest.raises(ValueError, match="seed_bits"):
        OLH(5, 1.0).output_distribution(0)
