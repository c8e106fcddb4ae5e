"""SPEC §6 checks for Hadamard Response (protocols/hadamard.py)."""
import math

import numpy as np
import pytest
import scipy.linalg

from _baseline_contract import (assert_exact_privacy, assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip)
from privfreq.protocols import get_protocol_class
from privfreq.protocols.base import Reason
from privfreq.protocols.hadamard import HadamardResponse, fwht


def test_registered():
    assert get_protocol_class("hr") is HadamardResponse


@pytest.mark.parametrize("size", [1, 2, 8, 64])
def test_fwht_matches_hadamard_matrix(size):
    a = np.random.default_rng(size).integers(-50, 50, (3, size))
    np.testing.assert_array_equal(fwht(a), a @ scipy.linalg.hadamard(size).T)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of 2"):
        fwht(np.zeros(6))


@pytest.mark.parametrize("k,eps,blocks", [(5, 1.0, None), (6, 3.0, None), (7, 3.0, 1),
                                          (9, 2.0, 2), (4, 0.2, None)])
def test_exact_privacy(k, eps, blocks):
    assert_exact_privacy(HadamardResponse(k, eps, blocks))


def test_block_choice():
    # (e^ε+2B−1)²/B minimised over powers of 2: B = 1 at ε = 1, 32 at ε = 4 (capped by k)
    assert HadamardResponse(1024, 1.0).blocks == 1
    assert HadamardResponse(1024, 4.0).blocks == 32
    assert HadamardResponse(5, 6.0).blocks == 4
    h = HadamardResponse(1024, 4.0)
    assert h.n_hadamard == 64 and h.output_size == 2048


@pytest.mark.parametrize("blocks", [1, 4])
def test_sampler_matches_distribution(blocks):
    proto = HadamardResponse(11, 2.0, blocks)
    assert_sampler_matches(proto, 6, lambda b: b.values[:, 0].tolist(), 40_000, seed=21 + blocks)


def test_variance_formula_at_zero():
    e = math.exp(0.5)
    h = HadamardResponse(100, 0.5, 1)
    assert math.isclose(h.variance(10)[0] * 10, (e + 1) ** 2 / (e - 1) ** 2)
    h4 = HadamardResponse(100, 0.5, 4)
    assert math.isclose(h4.variance(10)[0] * 10, (e + 7) ** 2 / (4 * (e - 1) ** 2))
    # f with block mass 1/B: the f-dependent formula agrees at f_x = 0
    f = np.zeros(100)
    f[[1, 2, 3, 4]] = 0.25      # one item per block
    assert math.isclose(h4.variance(10, f)[0], h4.variance(10)[0])


@pytest.mark.parametrize("blocks", [1, 4])
def test_unbiased_and_variance(blocks):
    counts = np.array([500, 300, 200, 100, 50, 0, 0, 30, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert_unbiased_and_variance(HadamardResponse(20, 1.5, blocks), counts, runs=400, seed=24)


def test_merge_contract():
    items = np.random.default_rng(25).integers(0, 100, 3000)
    assert_merge_contract(HadamardResponse(100, 3.0), items, seed=26)


@pytest.mark.parametrize("blocks", [1, 8])
def test_large_epsilon_reports_lie_in_the_item_set(blocks):
    # ε = 25: P(y ∉ C_x) = (2B−1)/(e^25+2B−1) < 2e-10 per report
    proto = HadamardResponse(30, 25.0, blocks)
    items = np.arange(30).repeat(20)
    y = proto.randomize(items, np.random.default_rng(27)).values[:, 0]
    j, r = proto.block_and_row(items)
    assert (y // proto.n_hadamard == j).all()
    assert (np.bitwise_count(r & (y % proto.n_hadamard)) % 2 == 0).all()


def test_wire_round_trip_and_rejection():
    proto = HadamardResponse(1024, 4.0)
    assert proto.payload_width(0) == 2 and proto.information_bits() == 11
    assert_wire_round_trip(proto, np.arange(1024), seed=28)
    raw = np.array([[0xFF, 0x07], [0x00, 0x08], [0xFF, 0xFF]], np.uint8)   # 2047, 2048, 65535
    _, reason = proto.decode_payloads(0, raw)
    assert list(reason) == [0, Reason.VALUE_OUT_OF_RANGE, Reason.VALUE_OUT_OF_RANGE]


@pytest.mark.parametrize("bad", [dict(k=1, epsilon=1.0), dict(k=5, epsilon=0),
                                 dict(k=16, epsilon=1.0, blocks=3),
                                 dict(k=16, epsilon=1.0, blocks=32),
                                 dict(k=16, epsilon=1.0, blocks=0), dict(k=16, epsilon=50.0)])
def test_validation(bad):
    with pytest.raises(ValueError):
        HadamardResponse(**bad)
