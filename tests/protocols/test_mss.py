"""SPEC §6 checks for ModularSubsetSelection, its decoder and its parameter validation."""
import math
import pickle

import numpy as np
import pytest

from _baseline_contract import (assert_exact_privacy, assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip)
from privfreq.protocols import base, mss_decoder, mss_design, mss_linalg
from privfreq.protocols.base import Reason
from privfreq.protocols.mss import ModularSubsetSelection as MSS
from privfreq.protocols.subset_selection import SubsetSelection


@pytest.mark.parametrize("k,eps,moduli", [(6, 1.0, (3, 4)), (10, 0.4, (5, 7)), (12, 2.0, (4, 5, 7))])
def test_exact_privacy(k, eps, moduli):
    assert_exact_privacy(MSS(k, eps, moduli))


def test_sampler_matches_distribution():
    proto = MSS(10, 0.4, (5, 7))
    assert_sampler_matches(proto, 8, lambda b: [(int(j), tuple(int(v) for v in r if v >= 0))
                                                for j, r in zip(b.block, b.values)],
                           60_000, seed=1)


def test_unbiased_and_exact_variance():
    # SPEC §6.3 for MSS: the empirical variance matches the exact sandwich covariance.
    proto = MSS(20, 1.0, (11, 13))
    counts = np.array([300, 200, 150, 100, 80, 60, 40, 30, 20, 10] + [5] * 10)
    assert_unbiased_and_variance(proto, counts, runs=400, seed=2)


def test_uniform_f_variance_is_near_the_privatization_part():
    # At uniform f and ε = 1 the SS noise's within-block correlations and the users' split among
    # blocks nearly cancel: the whole variance is 0.5-4.2 % above diag(M^{-1}), the f = 0 part.
    proto = MSS(64, 1.0, (37, 41))
    w = proto.expected_weights(10_000)
    simple = np.diag(np.linalg.inv(proto.design.normal_dense(w)))
    ratio = proto.variance(10_000) / simple
    assert 1.004 < ratio.min() and ratio.max() < 1.05


def test_merge_contract():
    items = np.random.default_rng(3).integers(0, 50, 4000)
    assert_merge_contract(MSS(50, 1.0, (29, 31)), items, seed=4)


@pytest.mark.parametrize("eps", [0.5, 4.0])   # bitmap and indices encodings
def test_wire_round_trip(eps):
    assert_wire_round_trip(MSS(300, eps, (151, 157, 163)), np.arange(900) % 300, seed=5)


def test_residue_out_of_range_is_rejected():
    proto = MSS(300, 4.0, (151, 157))     # indices, one byte each (m <= 256)
    assert proto.blocks[0].encoding == "indices"
    batch = proto.randomize(np.zeros(200, np.int64), np.random.default_rng(6))
    raw = proto.encode_payloads(0, batch.values[batch.block == 0])
    raw[0, 0] = 200                        # 200 >= m_0 = 151
    _, reason = proto.decode_payloads(0, raw)
    assert reason[0] == Reason.VALUE_OUT_OF_RANGE


def test_reference_mse_ratios_of_spec():
    # SPEC §2 reference points (k = 1024, ε = 1): MSE relative to SS on [k].
    ss = SubsetSelection(1024, 1.0).predicted_mse(10_000)
    for moduli, ratio in [((991, 1009), 1.06), ((859, 941, 1021), 1.08), ((557, 761), 2.1)]:
        got = MSS(1024, 1.0, moduli).predicted_mse(10_000) / ss
        assert abs(got - ratio) < 0.05 * ratio, (moduli, got)


@pytest.mark.slow
def test_mean_mse_matches_prediction_over_100_runs():
    # Issue 2 "done when": 100 seeded runs, k = 1024, n = 1e4, ε = 1, mean MSE within 10% of the
    # predicted (exact, at the true f) MSE. The relative sd of a 100-run mean MSE is ~0.5% here
    # (each run averages 1024 near-independent squared errors), so 10% is > 15 sd: no false failure.
    proto = MSS(1024, 1.0, (991, 1009))
    f = np.arange(1, 1025.0) ** -1.1
    counts = np.round(f / f.sum() * 10_000).astype(int)
    counts[0] += 10_000 - counts.sum()
    f = counts / 10_000
    items = np.repeat(np.arange(1024), counts)
    rng = np.random.default_rng(7)
    mses = [np.mean((proto.estimate(proto.add_reports(proto.create_accumulator(),
                                                      proto.randomize(items, rng))).frequencies
                     - f) ** 2) for _ in range(100)]
    predicted = proto.predicted_mse(10_000, f)
    assert abs(np.mean(mses) / predicted - 1) < 0.10


def test_decoder_diagnostics_and_stderr():
    proto = MSS(200, 2.0, (101, 103))
    acc = proto.add_reports(proto.create_accumulator(),
                            proto.randomize(np.arange(20_000) % 200, np.random.default_rng(8)))
    est = proto.estimate(acc)
    d = est.diagnostics
    assert d["full_column_rank"] and d["blocks_dropped"] == [] and "stop_reason" in d
    # item-graph components of ~100 items: too costly for the direct solve, so LSMR iterates
    assert d["solver"] == "lsmr" and d["iterations"] > 0 and d["stop_code"] in (1, 2)
    np.testing.assert_allclose(est.stderr ** 2, proto.variance(20_000), rtol=0.05)
    direct = mss_decoder.decode(proto, acc, solver="direct").diagnostics
    assert direct["solver"] == "direct" and direct["iterations"] == 0 and direct["stop_code"] == -1
    np.testing.assert_allclose(mss_decoder.decode(proto, acc, solver="direct").frequencies,
                               est.frequencies, atol=1e-9)


def test_lsmr_matches_normal_equations():
    proto = MSS(60, 1.0, (31, 37))
    acc = proto.add_reports(proto.create_accumulator(),
                            proto.randomize(np.arange(6000) % 60, np.random.default_rng(9)))
    d = proto.design
    w = proto.block_weights(acc.n_block)
    ghat = np.concatenate([(acc.counts[d.offsets[j]:d.offsets[j + 1]] / acc.n_block[j] - c.q)
                           / (c.p - c.q) for j, c in enumerate(proto.blocks)])
    a = d.matrix().toarray()
    wrow = np.repeat(w, proto.moduli)
    direct = np.linalg.solve(a.T @ (wrow[:, None] * a), a.T @ (wrow * ghat))
    np.testing.assert_allclose(proto.estimate(acc).frequencies, direct, atol=1e-8)
    np.testing.assert_allclose(mss_decoder.decode(proto, acc, solver="lsmr").frequencies, direct,
                               atol=1e-8)


def _random_counts(proto, n_block, rng):
    """Counts with any values (decode is affine in them) and given reports per block."""
    acc = proto.create_accumulator()
    acc.counts[:] = rng.integers(0, max(n_block) + 1, size=acc.counts.shape)
    acc.n_block[:] = n_block
    return acc


def _without_forest(proto):
    """The same protocol with the closed-form forest solve disabled (batched direct solves)."""
    clone = MSS(proto.k, proto.epsilon, proto.moduli, ridge=proto.ridge)
    clone.design.__dict__["forest"] = None
    return clone


def _coprime_pair(k, rng):
    """Two coprime moduli in [0.6k, 1.1k]: trees of 1-26 items, some rows without items (m > k)."""
    while True:
        a, b = (int(x) for x in rng.integers(int(0.6 * k), int(1.1 * k) + 2, size=2))
        if a != b and math.gcd(a, b) == 1 and a + b - 1 >= k:
            return a, b


@pytest.mark.parametrize("seed", range(8))
def test_forest_closed_form_matches_direct_solve_and_lsmr(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(20, 3000))
    proto = MSS(k, float(rng.uniform(0.3, 5.0)), _coprime_pair(k, rng))
    assert proto.design.forest is not None
    acc = _random_counts(proto, rng.integers(1, 10 ** 5, size=2), rng)
    est = mss_decoder.decode(proto, acc, stderr=False)
    assert est.diagnostics["stop_reason"].startswith("closed form")
    assert est.diagnostics["solver"] == "direct" and est.diagnostics["stop_code"] == -1
    ref = mss_decoder.decode(_without_forest(proto), acc, stderr=False, solver="direct")
    assert ref.diagnostics["stop_reason"].startswith("direct solve")
    scale = np.abs(ref.frequencies).max()
    np.testing.assert_allclose(est.frequencies, ref.frequencies, rtol=0, atol=1e-10 * scale)
    assert est.diagnostics["residual_norm"] == pytest.approx(ref.diagnostics["residual_norm"],
                                                             rel=1e-10)
    forced = mss_decoder.decode(proto, acc, stderr=False, solver="direct")
    np.testing.assert_array_equal(forced.frequencies, est.frequencies)
    lsmr_est = mss_decoder.decode(proto, acc, stderr=False, solver="lsmr")
    np.testing.assert_allclose(est.frequencies, lsmr_est.frequencies, rtol=0, atol=1e-7 * scale)


def test_forest_closed_form_at_k_2_16():
    rng = np.random.default_rng(7)
    proto = MSS(2 ** 16, 0.5, (61099, 62507))
    assert proto.design.forest is not None
    acc = _random_counts(proto, [4000, 6000], rng)
    est = mss_decoder.decode(proto, acc, stderr=False)
    ref = mss_decoder.decode(_without_forest(proto), acc, stderr=False)
    assert est.diagnostics["stop_reason"].startswith("closed form")
    np.testing.assert_allclose(est.frequencies, ref.frequencies, rtol=0,
                               atol=1e-10 * np.abs(ref.frequencies).max())
    assert est.diagnostics["residual_norm"] == pytest.approx(ref.diagnostics["residual_norm"],
                                                             rel=1e-10)


@pytest.mark.parametrize("n_block,ridge", [([0, 500], 0.0), ([500, 0], 0.0), ([300, 500], 2.0)])
def test_forest_closed_form_not_used_for_dropped_blocks_or_ridge(n_block, ridge):
    # an empty block leaves ℓ = 1 and λ > 0 has no closed form: the other solvers run as before
    proto = MSS(60, 1.0, (59, 61), ridge=ridge)
    acc = _random_counts(proto, n_block, np.random.default_rng(3))
    est = mss_decoder.decode(proto, acc, stderr=False)
    assert not est.diagnostics["stop_reason"].startswith("closed form")
    ref = mss_decoder.decode(_without_forest(proto), acc, stderr=False)
    np.testing.assert_array_equal(est.frequencies, ref.frequencies)


def test_forest_needs_two_blocks_and_no_cycle():
    assert mss_design.Design(12, (4, 6)).forest is None      # 12 items on 10 rows: cycles
    assert mss_design.Design(60, (7, 11, 13)).forest is None  # ℓ = 3
    forest = mss_design.Design(40, (37, 41)).forest          # row 40 of block 1: no items
    assert forest is not None and forest.items.size == 2 * 3   # 3 trees of 2 items (x, x + 37)


def test_forest_closed_form_with_single_items_only():
    proto = MSS(30, 1.5, (31, 37))   # both moduli > k: every item alone, rows 30.. without items
    assert proto.design.forest.items.size == 0
    acc = _random_counts(proto, [700, 300], np.random.default_rng(4))
    est = mss_decoder.decode(proto, acc, stderr=False)
    ref = mss_decoder.decode(_without_forest(proto), acc, stderr=False)
    assert est.diagnostics["stop_reason"].startswith("closed form")
    np.testing.assert_allclose(est.frequencies, ref.frequencies, rtol=1e-12)
    assert est.diagnostics["residual_norm"] == pytest.approx(ref.diagnostics["residual_norm"],
                                                             rel=1e-10)


def test_empty_block_is_dropped_and_flagged():
    proto = MSS(40, 1.0, (37, 41))   # 41 >= k: block 1 alone has full rank
    batch = proto.randomize(np.arange(400) % 40, np.random.default_rng(10))
    acc = proto.add_reports(proto.create_accumulator(), batch.take(batch.block == 1))
    d = proto.estimate(acc).diagnostics
    assert d["blocks_dropped"] == [0] and d["full_column_rank"]
    acc0 = proto.add_reports(proto.create_accumulator(), batch.take(batch.block == 0))
    est0 = proto.estimate(acc0)
    assert not est0.diagnostics["full_column_rank"] and np.isinf(est0.stderr).all()


def test_ridge_shrinks_and_keeps_stderr_finite():
    proto = MSS(60, 1.0, (31, 37), ridge=1e3)
    acc = proto.add_reports(proto.create_accumulator(),
                            proto.randomize(np.zeros(3000, np.int64), np.random.default_rng(11)))
    est = proto.estimate(acc)
    unridged = MSS(60, 1.0, (31, 37)).estimate(acc)
    assert abs(est.frequencies[0]) < abs(unridged.frequencies[0])
    assert np.isfinite(est.stderr).all()


def test_large_k_stochastic_variance_close_to_structure():
    # k > DENSE_LIMIT takes the CG/Hutchinson path; compare with the exact path on the same design
    # scaled down is impossible, so check the trace estimate against the diagonal estimate.
    proto = MSS(5000, 2.0, (4999, 4993))
    assert proto.k > base.DENSE_LIMIT
    diag = proto.variance(10_000)
    mse = proto.predicted_mse(10_000)
    assert abs(diag.mean() / mse - 1) < 0.05
    ss = SubsetSelection(5000, 2.0).predicted_mse(10_000)
    assert 1.0 < mse / ss < 1.1


def test_pickle_drops_the_design_cache():
    proto = MSS(100, 1.0, (53, 59))
    _ = proto.design
    state = pickle.dumps(proto)
    clone = pickle.loads(state)
    assert clone == proto and "design" not in clone.__dict__
    assert len(state) < len(pickle.dumps(proto.design))


@pytest.mark.parametrize("k,moduli,match", [
    (100, (50, 60), "pairwise coprime"),
    (1000, (7, 11), "product"),
    (100, (11, 13), "sum"),
    (100, (1, 101), "modulus"),
    (100, (), "at least one"),
    (100, "ab", "integer"),
])
def test_invalid_moduli_name_the_rule(k, moduli, match):
    with pytest.raises(ValueError, match=match):
        MSS(k, 1.0, moduli)


@pytest.mark.parametrize("k,moduli", [(8, (3, 5)), (5000, (2497, 2503))])
def test_rank_check_detects_deficiency(k, moduli):
    # Σm − ℓ + 1 = k − 1: one column too many, so A cannot have full column rank. The rank check
    # must see it on its own (dense Cholesky path for small k, bounded CG for k > DENSE_LIMIT).
    assert sum(moduli) - len(moduli) + 1 == k - 1
    assert not mss_linalg.has_full_column_rank(k, moduli)
    assert mss_linalg.has_full_column_rank(k - 1, moduli)


@pytest.mark.parametrize("kwargs,match", [({"epsilon": 0}, "epsilon"), ({"k": 1}, "k"),
                                          ({"ridge": -1.0}, "ridge")])
def test_invalid_scalars(kwargs, match):
    args = {"k": 10, "epsilon": 1.0, "moduli": (5, 7)} | kwargs
    with pytest.raises(ValueError, match=match):
        MSS(**args)


def test_information_bits():
    proto = MSS(1024, 1.0, (991, 1009))
    expect = 1 + (math.ceil(math.log2(math.comb(991, proto.blocks[0].omega)))
                  + math.ceil(math.log2(math.comb(1009, proto.blocks[1].omega)))) / 2
    assert proto.information_bits() == expect


@pytest.mark.parametrize("k,moduli", [(120, (151, 157, 163)), (30, (7, 9, 11, 13))])
def test_add_reports_matches_masked_count(k, moduli):
    # Blocks with different ω (so -1 padding): per-block batches, mixed batches, an empty batch
    # and a one-report batch all give the counts of the plain masked bincount.
    proto = MSS(k, 0.7, moduli)
    assert len({c.omega for c in proto.blocks}) > 1
    batch = proto.randomize(np.arange(3000) % k, np.random.default_rng(3))

    def reference(b):
        flat = b.values + proto.offsets[b.block][:, None]
        return np.bincount(flat[b.values >= 0], minlength=proto.count_shape()[0])

    mixed = proto.add_reports(proto.create_accumulator(), batch)
    np.testing.assert_array_equal(mixed.counts, reference(batch))
    np.testing.assert_array_equal(mixed.n_block, np.bincount(batch.block, minlength=proto.ell))
    per_block = proto.create_accumulator()
    for j in range(proto.ell):
        proto.add_reports(per_block, batch.take(batch.block == j))
    proto.add_reports(per_block, batch.take(np.zeros(0, np.int64)))
    np.testing.assert_array_equal(per_block.counts, mixed.counts)
    np.testing.assert_array_equal(per_block.n_block, mixed.n_block)
    one = proto.add_reports(proto.create_accumulator(), batch.take([5]))
    np.testing.assert_array_equal(one.counts, reference(batch.take([5])))
