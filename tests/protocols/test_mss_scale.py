"""MSS at scale (issue 5): million-item decode on memory-safe paths, structured operators, exact
per-component covariances, stochastic fallback, early rejects and planner determinism at large k."""
import tracemalloc

import numpy as np
import pytest

from privfreq.protocols import mss_covariance, mss_decoder, mss_design, mss_linalg, planner
from privfreq.protocols.mss import ModularSubsetSelection as MSS
from privfreq.protocols.subset_selection import SubsetSelection


def _sampled_counts(proto, item_counts, rng):
    """Accumulator drawn from the exact per-cell marginals (the SS randomizer at k = 2^20 would
    draw ~10^4 subset members per report)."""
    acc = proto.create_accumulator()
    per_block = rng.multinomial(item_counts, np.full(proto.ell, 1 / proto.ell))
    for j, c in enumerate(proto.blocks):
        cj = np.bincount(np.arange(proto.k) % c.m, weights=per_block[:, j], minlength=c.m)
        cj = cj.astype(np.int64)
        nj = int(per_block[:, j].sum())
        sl = slice(proto.offsets[j], proto.offsets[j + 1])
        acc.counts[sl] = rng.binomial(cj, c.p) + rng.binomial(nj - cj, c.q)
        acc.n_block[j] = nj
    return acc


def test_structured_operators_match_the_sparse_matrix():
    rng = np.random.default_rng(0)
    for k, moduli in [(60, (31, 37)), (100, (7, 11, 13)), (50, (3, 5, 7, 11)), (30, (40, 41))]:
        d = mss_design.Design(k, moduli)
        a = d.matrix().toarray()
        w = rng.random(len(moduli))
        wr = np.repeat(w, moduli)
        v, u = rng.random((k, 3)), rng.random((d.n_rows, 2))
        np.testing.assert_allclose(d.normal_matvec(w, v), a.T @ (wr[:, None] * (a @ v)))
        np.testing.assert_allclose(d.normal_matvec(w, v[:, 0]), a.T @ (wr * (a @ v[:, 0])))
        np.testing.assert_allclose(d.forward(v, w), wr[:, None] * (a @ v))
        np.testing.assert_allclose(d.adjoint(u, w), a.T @ (wr[:, None] * u))
        np.testing.assert_allclose(d.normal_row_sums(w), d.normal_dense(w).sum(axis=1))


@pytest.mark.parametrize("k,moduli,ridge", [(200, (101, 103), 0.0), (300, (151, 157, 163), 0.0),
                                            (1024, (557, 761), 0.0), (60, (31, 37), 0.5)])
def test_structured_covariance_equals_dense_formula(k, moduli, ridge):
    # The per-component diagonal (rank-two SS noise, split terms, 2ℓ solves) against the same
    # formula assembled as dense k×k matrices (the formula itself is checked by simulation in
    # test_mss_covariance.py), at Zipf f and at the block sizes n/ℓ.
    proto = MSS(k, 2.0, moduli, ridge=ridge)
    f = np.arange(1, k + 1.0) ** -1.1
    f /= f.sum()
    pop = mss_covariance.population(proto, np.full(len(moduli), 3000 / len(moduli)), f)
    np.testing.assert_allclose(mss_covariance.covariance_diagonal(proto.design, pop),
                               np.diag(mss_covariance.exact_covariance(proto, 3000, f)), rtol=1e-9)
    if ridge == 0:
        d, w = proto.design, proto.expected_weights(3000)
        tr, err = mss_linalg.trace_inverse_estimate(d, w)
        assert err == 0 and tr == pytest.approx(np.trace(np.linalg.inv(d.normal_dense(w))),
                                                rel=1e-9)


def test_million_item_decode_is_memory_safe_and_finite(monkeypatch):
    # k = 2^20, the planner's ℓ = 2 shape: every item-graph component has <= 8 items, so stderr is
    # exact without any k×k object. Dense helpers are disabled to prove they are not reached.
    k = 2 ** 20
    proto = MSS(k, 2.0, (977447, 999431))
    monkeypatch.setattr(mss_design.Design, "normal_dense", None)
    monkeypatch.setattr(mss_linalg, "dense_inverse", None)
    monkeypatch.setattr(mss_covariance, "dense_inverse", None)
    rng = np.random.default_rng(1)
    item_counts = rng.multinomial(3000, np.full(k, 1 / k))
    acc = _sampled_counts(proto, item_counts, rng)
    tracemalloc.start()
    est = proto.estimate(acc)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    groups, big = proto.design.components
    assert big.size == 0 and max(groups) <= 8
    assert est.diagnostics["stderr"] == "exact" and est.diagnostics["full_column_rank"]
    assert est.diagnostics["solver"] == "direct" and est.diagnostics["iterations"] == 0
    lsmr_est = mss_decoder.decode(proto, acc, stderr=False, solver="lsmr")
    assert lsmr_est.diagnostics["stop_code"] in (1, 2) and lsmr_est.diagnostics["iterations"] < 50
    np.testing.assert_allclose(lsmr_est.frequencies, est.frequencies,
                               atol=1e-7 * np.abs(est.frequencies).max())
    assert np.isfinite(est.frequencies).all() and np.isfinite(est.stderr).all()
    assert (est.stderr > 0).all()
    # O(k·ℓ): a few dozen length-k float arrays at most (one k×k float matrix would be 8 TiB).
    assert peak < 80 * 8 * k, peak / 2 ** 20
    # stderr at the realised block sizes equals the expected-size variance up to n_j/(n/ℓ)
    var = proto.variance(3000)
    ratio = est.stderr ** 2 / var
    assert 0.9 < ratio.min() <= ratio.max() < 1.1
    mse = proto.predicted_mse(3000)
    assert mse == pytest.approx(var.mean(), rel=1e-9)
    skip = proto.estimate(acc, stderr=False)
    assert np.isnan(skip.stderr).all() and skip.diagnostics["stderr"] == "skipped"
    np.testing.assert_array_equal(skip.frequencies, est.frequencies)


def test_giant_component_falls_back_to_stochastic_diagonal():
    # ℓ = 4 planner pick at k = 22000: two components of 4902 items (> DENSE_LIMIT) go stochastic,
    # the other 12198 items stay exact.
    proto = MSS(22000, 2.0, (17099, 17911, 19727, 20101))
    d = proto.design
    assert d.components[1].size == 9804 - 2
    var = proto.variance(10_000)
    assert np.isfinite(var).all() and (var > 0).all()
    mse = proto.predicted_mse(10_000)
    assert var.mean() == pytest.approx(mse, rel=1e-12)
    singles = d.components[0][1][:, 0]
    w = proto.expected_weights(10_000)
    # at uniform f a singleton's variance is its f = 0 privatization part 1/Σw up to ~1e-4
    np.testing.assert_allclose(var[singles], 1 / w.sum(), rtol=1e-3)
    assert mse / SubsetSelection(22000, 2.0).predicted_mse(10_000) == pytest.approx(1.12, abs=0.02)
    # the stochastic part: 8 probes against 128, within 4 standard errors of the 8-probe sum
    pop = mss_covariance.population(proto, np.full(4, 2500.0), np.full(22000, 1 / 22000))
    few, err = mss_covariance.covariance_with_error(d, pop)
    many, _ = mss_covariance.covariance_with_error(d, pop, probes=128)
    assert 0 < err and abs(few.sum() - many.sum()) < 4 * err


def test_cg_lower_bound_rejects_early():
    # An ill-conditioned design (moduli near k/2) has a huge trace: the running CG lower bound
    # passes a small threshold long before convergence.
    d = mss_design.Design(20_000, (10007, 10009))
    w = np.ones(2)
    with pytest.raises(mss_linalg.ExceedsBound):
        mss_linalg.trace_inverse_estimate(d, w, probes=1, stop_above=3 * 20_000,
                                           components=False)
    good = mss_design.Design(20_000, (19997, 19993))
    tr, _ = mss_linalg.trace_inverse_estimate(good, w, probes=1, components=False)
    with pytest.raises(mss_linalg.ExceedsBound):
        mss_linalg.trace_inverse_estimate(good, w, probes=1, stop_above=0.9 * tr,
                                           components=False)
    assert mss_linalg.trace_inverse_estimate(good, w, probes=1, stop_above=1.1 * tr,
                                              components=False)[0] == tr


def test_planner_large_k_deterministic_and_consistent():
    # k = 22000 takes the screened (stochastic) planner path; same seed, same answer, and every
    # returned figure agrees with the protocol's own prediction.
    a = planner.plan(22000, 2.0, ell=2, max_mse_factor=1.3, top=2)
    assert a == planner.plan(22000, 2.0, ell=2, max_mse_factor=1.3, top=2)
    assert [c.bits for c in a] == sorted(c.bits for c in a)
    assert a[0].moduli == (20509, 20983)       # the pick recorded in the evaluation run
    ss = SubsetSelection(22000, 2.0).predicted_mse(1)
    for c in a:
        proto = MSS(22000, 2.0, c.moduli)
        assert c.mse_ratio_ss <= 1.3 and c.condition_number <= 10
        assert c.bits == proto.information_bits()
        assert c.predicted_mse_n1 == pytest.approx(proto.predicted_mse(1), rel=1e-6)
        assert c.mse_ratio_ss == pytest.approx(c.predicted_mse_n1 / ss)
