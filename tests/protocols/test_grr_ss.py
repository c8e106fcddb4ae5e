"""SPEC §6 checks for GRR and Subset Selection on [k] (protocols/grr.py, subset_selection.py)."""
import math

import numpy as np
import pytest

from _baseline_contract import (assert_exact_privacy, assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip)
from privfreq.protocols.base import Reason
from privfreq.protocols.grr import GRR
from privfreq.protocols.ss_sampler import sample_subsets
from privfreq.protocols.subset_selection import SubsetSelection, ss_constants

COUNTS = np.array([500, 300, 200, 120, 80, 50, 30, 20, 0, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("k,eps", [(2, 0.5), (5, 1.0), (8, 3.0)])
def test_grr_exact_privacy(k, eps):
    assert_exact_privacy(GRR(k, eps))


@pytest.mark.parametrize("k,eps", [(2, 0.5), (6, 0.3), (7, 1.0), (9, 2.0), (10, 0.05)])
def test_ss_exact_privacy(k, eps):
    assert_exact_privacy(SubsetSelection(k, eps))


def test_grr_sampler_matches_distribution():
    assert_sampler_matches(GRR(6, 1.0), 2, lambda b: list(b.values[:, 0]), 30_000, seed=1)


@pytest.mark.parametrize("k,eps", [(7, 0.3), (9, 1.0)])
def test_ss_sampler_matches_distribution(k, eps):
    # Checks the vectorized sampler (rejection + swap-in) against the exact P(Z | r) of SPEC §1.
    proto = SubsetSelection(k, eps)
    assert proto.ss.omega > 1
    assert_sampler_matches(proto, 3, lambda b: [tuple(r) for r in b.values], 60_000, seed=2)


def test_ss_constants_match_spec():
    c = ss_constants(1024, 1.0)
    e = math.e
    assert c.omega == int(np.rint(1024 / (e + 1)))
    assert math.isclose(c.p, c.omega * e / (c.omega * e + 1024 - c.omega))
    # q is P(r' in Z | r): check by the law of total probability over the two branches.
    q = c.p * (c.omega - 1) / 1023 + (1 - c.p) * c.omega / 1023
    assert math.isclose(c.q, q)
    assert ss_constants(10, 8.0).omega == 1


def test_ss_subsets_are_distinct_sorted_and_in_range():
    c = ss_constants(500, 0.5)
    z = sample_subsets(np.arange(5000) % 500, c, np.random.default_rng(3))
    assert z.shape == (5000, c.omega)
    assert (np.diff(z, axis=1) > 0).all() and z.min() >= 0 and z.max() < 500


@pytest.mark.parametrize("proto", [GRR(16, 1.0), SubsetSelection(16, 1.0), SubsetSelection(16, 0.2)],
                         ids=["grr", "ss", "ss-lowe"])
def test_unbiased_and_variance(proto):
    assert_unbiased_and_variance(proto, COUNTS, runs=400, seed=4)


@pytest.mark.parametrize("proto", [GRR(37, 2.0), SubsetSelection(37, 0.7)], ids=["grr", "ss"])
def test_merge_contract(proto):
    items = np.random.default_rng(5).integers(0, 37, 3000)
    assert_merge_contract(proto, items, seed=6)


@pytest.mark.parametrize("proto", [GRR(300, 1.0), SubsetSelection(300, 4.0),
                                   SubsetSelection(300, 0.5)], ids=["grr", "ss-idx", "ss-bitmap"])
def test_wire_round_trip(proto):
    assert_wire_round_trip(proto, np.arange(600) % 300, seed=7)


def test_ss_rejects_malformed_payloads():
    proto = SubsetSelection(300, 4.0)   # indices encoding, ω = 5, 2 bytes each
    assert proto.ss.encoding == "indices"
    good = proto.encode_payloads(0, proto.randomize(np.arange(3), np.random.default_rng(8)).values)
    dup = good.copy()
    dup[0, 2:4] = dup[0, 0:2]              # repeat the first index
    big = good.copy()
    big[1, 0:2] = [0xFF, 0xFF]             # 65535 >= k
    _, reason = proto.decode_payloads(0, np.vstack([dup[:1], big[1:2], good[2:]]))
    assert list(reason) == [Reason.DUPLICATE_VALUE, Reason.VALUE_OUT_OF_RANGE, Reason.OK]


@pytest.mark.parametrize("cls", [GRR, SubsetSelection])
@pytest.mark.parametrize("k,eps,field", [(1, 1.0, "k"), (10, 0.0, "epsilon"), (10, -1, "epsilon"),
                                         (10, float("nan"), "epsilon"), (2.5, 1.0, "k")])
def test_invalid_params_name_the_field(cls, k, eps, field):
    with pytest.raises(ValueError, match=field):
        cls(k, eps)


def test_items_outside_the_domain_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        GRR(5, 1.0).randomize(np.array([0, 5]), np.random.default_rng(0))
