"""SPEC §6 checks for OUE and SUE (protocols/unary_encoding.py), one parametrized suite."""
import math

import numpy as np
import pytest

from _baseline_contract import (assert_exact_privacy, assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip, items_for)
from privfreq.protocols import get_protocol_class
from privfreq.protocols.base import Reason


@pytest.fixture(params=["oue", "sue"])
def Proto(request):
    return get_protocol_class(request.param)


def _variance_n1_at_zero(pid, eps):
    """n·Var at f_x = 0 (Wang et al. 2017): OUE 4e^ε/(e^ε−1)², SUE e^{ε/2}/(e^{ε/2}−1)²."""
    e = math.exp(eps if pid == "oue" else eps / 2)
    return 4 * e / (e - 1) ** 2 if pid == "oue" else e / (e - 1) ** 2


def bits_keys(k):
    return lambda batch: [tuple(r) for r in np.unpackbits(batch.values, axis=1, count=k,
                                                          bitorder="little")]


@pytest.mark.parametrize("k,eps", [(2, 0.5), (5, 1.0), (7, 3.0), (9, 0.1)])
def test_exact_privacy(Proto, k, eps):
    assert_exact_privacy(Proto(k, eps))


def test_sampler_matches_distribution(Proto):
    proto = Proto(5, 1.0)
    assert_sampler_matches(proto, 3, bits_keys(5), 40_000, seed=1)


def test_constants_and_variance_formula(Proto):
    proto = Proto(100, 1.3)
    assert math.isclose(proto.variance(1000)[0] * 1000,
                        _variance_n1_at_zero(proto.protocol_id, 1.3))
    # the likelihood ratio of the two bit values is e^ε exactly
    assert math.isclose(proto.p * (1 - proto.q) / (proto.q * (1 - proto.p)), math.exp(1.3))


def test_unbiased_and_variance(Proto):
    counts = np.array([400, 250, 150, 100, 60, 40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert_unbiased_and_variance(Proto(16, 1.0), counts, runs=400, seed=2)


def test_merge_contract(Proto):
    items = np.random.default_rng(3).integers(0, 37, 3000)
    assert_merge_contract(Proto(37, 2.0), items, seed=4)


def test_large_batch_is_chunked(Proto, monkeypatch):
    import privfreq.protocols.unary_encoding as ue
    monkeypatch.setattr(ue, "CHUNK_ELEMENTS", 64)   # force many chunks
    proto = Proto(21, 1.0)
    items = np.arange(500) % 21
    a = proto.randomize(items, np.random.default_rng(5))
    acc = proto.add_reports(proto.create_accumulator(), a)
    bits = np.unpackbits(a.values, axis=1, count=21, bitorder="little")
    np.testing.assert_array_equal(acc.counts, bits.sum(axis=0))


def test_no_noise_limit(Proto):
    proto = Proto(10, 60.0)
    counts = np.array([5, 0, 3, 0, 0, 0, 0, 1, 0, 1])
    acc = proto.add_reports(proto.create_accumulator(),
                            proto.randomize(items_for(counts), np.random.default_rng(0)))
    if proto.p > 1 - 1e-12:          # SUE: p → 1 and q → 0, the exact counts
        np.testing.assert_array_equal(acc.counts, counts)
    else:  # OUE keeps the true bit only w.p. 1/2 at any ε, but never sets another one
        assert proto.p == 0.5
        assert (acc.counts <= counts).all() and acc.counts[counts == 0].sum() == 0
        assert acc.counts.sum() > 0


def test_wire_round_trip_and_rejection(Proto):
    proto = Proto(13, 1.0)
    assert proto.payload_width(0) == 2 and proto.information_bits() == 13
    batch = assert_wire_round_trip(proto, np.arange(13), seed=6)
    raw = proto.encode_payloads(0, batch.values)
    raw[2, 1] |= 0x20            # bit 13: padding
    raw[5, 1] |= 0x80            # bit 15: padding
    _, reason = proto.decode_payloads(0, raw)
    assert list(np.nonzero(reason)[0]) == [2, 5] and (reason[[2, 5]] == Reason.BAD_PADDING).all()
    _, reason = proto.decode_payloads(0, raw[:, :1])
    assert (reason == Reason.BAD_LENGTH).all()
    # k a multiple of 8: no padding bits, every byte pattern is a valid report
    p8 = Proto(16, 1.0)
    allbits = np.full((3, 2), 0xFF, np.uint8)
    vals, reason = p8.decode_payloads(0, allbits)
    assert (reason == 0).all() and np.array_equal(vals, allbits)


@pytest.mark.parametrize("bad", [dict(k=1, epsilon=1.0), dict(k=5, epsilon=0.0),
                                 dict(k=5, epsilon=float("inf")), dict(k=2.5, epsilon=1.0)])
def test_validation(Proto, bad):
    with pytest.raises(ValueError):
        Proto(**bad)


def test_rejects_out_of_domain_items(Proto):
    with pytest.raises(ValueError, match=r"items must be in \[0, 5\)"):
        Proto(5, 1.0).randomize(np.array([0, 5]), np.random.default_rng(0))
