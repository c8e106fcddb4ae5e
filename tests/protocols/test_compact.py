"""Compact reports (SPEC §10): PI-RAPPOR (exact privacy by enumeration) and seed-compressed SS and
MSS (accepted subsets against SS's distribution, with a true random source and with the PRG)."""
import itertools
import math
import os
import sys

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, os.path.dirname(__file__))
from _baseline_contract import (CHI2_ALPHA, assert_exact_privacy,  # noqa: E402
                                assert_merge_contract, assert_sampler_matches,
                                assert_unbiased_and_variance, assert_wire_round_trip, items_for)

from privfreq.protocols import attacks  # noqa: E402
from privfreq.protocols.compressed_mss import CompressedModularSubsetSelection  # noqa: E402
from privfreq.protocols.compressed_ss import CompressedSubsetSelection, expand_seeds  # noqa: E402
from privfreq.protocols.pi_rappor import PIRappor  # noqa: E402
from privfreq.protocols.subset_selection import subset_distribution, ss_constants  # noqa: E402

COUNTS = np.array([900, 400, 300, 200, 100, 60, 30, 10] + [0] * 8)


@pytest.mark.parametrize("k,eps", [(4, math.log(2)), (5, math.log(4)), (7, 1.5), (3, 2.5)])
def test_pi_rappor_exact_privacy_is_ln_q_minus_1(k, eps):
    proto = PIRappor(k, eps)
    assert proto.real_epsilon <= eps + 1e-12
    assert_exact_privacy(proto, epsilon=proto.real_epsilon)


def test_pi_rappor_sampler_matches_enumeration():
    proto = PIRappor(5, math.log(4))          # q = 5, t = 2: 125 outputs
    assert_sampler_matches(proto, 3, lambda b: [tuple(r) for r in b.values.tolist()], 40_000,
                           seed=7)


def test_pi_rappor_contract_and_size():
    proto = PIRappor(16, 2.0)                 # q = 7, t = 2
    assert (proto.prime, proto.t) == (7, 2)
    assert proto.information_bits() == pytest.approx(3 * math.log2(7))
    assert_unbiased_and_variance(proto, COUNTS, runs=300, seed=8)
    assert_merge_contract(proto, items_for(COUNTS), seed=9)
    assert_wire_round_trip(proto, items_for(COUNTS), seed=10)
    with pytest.raises(ValueError, match="ln 2"):
        PIRappor(16, 0.5)


def test_pi_rappor_asr_approximation_agrees_with_attack():
    """Empirical Bayes-attack ASR within 4σ of the closed form (pairwise-independent supports
    treated as independent; binomial σ, false failure 6e-5)."""
    proto = PIRappor(64, 2.0)
    n = 40_000
    rng = np.random.default_rng(11)
    items = rng.integers(0, 64, n)
    emp = attacks.empirical_asr(proto, proto.randomize(items, rng), items, rng)
    a = proto.closed_form_asr()
    assert abs(emp - a) < 4 * math.sqrt(a * (1 - a) / n), (emp, a)


def _css_dist(proto, x):
    """Exact P(Z | x) of the ideal mechanism: SS's distribution mixed with uniform (weight ρ^T)."""
    c = ss_constants(proto.k, proto.epsilon)
    ss = subset_distribution(c, x)
    u = 1 / math.comb(proto.k, c.omega)
    return {z: (1 - proto.fallback) * pr + proto.fallback * u for z, pr in ss.items()}


def test_css_ideal_mechanism_is_eps_ldp_and_matches_p_q():
    proto = CompressedSubsetSelection(6, 1.0)
    dists = [_css_dist(proto, x) for x in range(6)]
    keys = list(dists[0])
    mat = np.array([[d[z] for z in keys] for d in dists])
    assert (mat.max(axis=0) / mat.min(axis=0)).max() <= math.exp(1.0) * (1 + 1e-12)
    p = sum(pr for z, pr in dists[0].items() if 0 in z)
    q = sum(pr for z, pr in dists[0].items() if 1 in z)
    assert (p, q) == (pytest.approx(proto.p, rel=1e-12), pytest.approx(proto.q, rel=1e-12))


@pytest.mark.parametrize("eps", [0.5, 1.0, 3.0])
def test_css_accepted_subsets_match_ss_with_a_true_random_source(eps):
    """Goodness of fit (chi-square, false failure CHI2_ALPHA = 1e-4) of the accepted subsets when
    the PRG is replaced by a true random source (rng-drawn uniform ω-subsets)."""
    proto = CompressedSubsetSelection(6, eps)
    src_rng = np.random.default_rng(99)
    table = {}

    def source(seeds):
        z = np.sort(np.argsort(src_rng.random((len(seeds), 6)), axis=1)[:, :proto.omega], axis=1)
        for s, row in zip(seeds.tolist(), z.tolist()):
            table[s] = tuple(row)
        return z

    assert_sampler_matches(proto, 2, lambda b: [table[s] for s in b.values[:, 0].tolist()],
                           30_000, seed=12, dist=_css_dist(proto, 2),
                           sampler=lambda items, rng: proto.randomize(items, rng, source=source))


def test_css_accepted_subsets_match_ss_with_the_prg():
    proto = CompressedSubsetSelection(7, 1.0)
    assert_sampler_matches(proto, 4, lambda b: [tuple(r) for r in
                                                expand_seeds(b.values[:, 0], 7, proto.omega)],
                           30_000, seed=13, dist=_css_dist(proto, 4))


def test_prg_subsets_are_uniform():
    """Chi-square of G(s) over the C(7, 3) = 35 subsets for 35 000 consecutive seeds."""
    z = expand_seeds(np.arange(35_000), 7, 3)
    assert (np.diff(z, axis=1) > 0).all() and z.min() >= 0 and z.max() < 7
    index = {c: i for i, c in enumerate(itertools.combinations(range(7), 3))}
    obs = np.bincount([index[tuple(r)] for r in z.tolist()], minlength=35)
    assert stats.chisquare(obs).pvalue > CHI2_ALPHA


def test_css_contract_and_label():
    proto = CompressedSubsetSelection(16, 1.0)
    assert proto.privacy_kind == "computational"
    assert_unbiased_and_variance(proto, COUNTS, runs=200, seed=14)
    assert_merge_contract(proto, items_for(COUNTS), seed=15)
    assert_wire_round_trip(proto, items_for(COUNTS), seed=16)
    est = proto.estimate(proto.create_accumulator(), stderr=False)
    assert est.diagnostics["privacy"] == "computational"
    assert proto.payload_width(0) == 8


# ----- seed-compressed MSS (cmss) -------------------------------------------------------------------
CMSS = dict(k=14, epsilon=1.0, moduli=(4, 5, 7))   # pairwise coprime, Σm − ℓ + 1 = 14 >= k


def _cmss_dist(proto, x):
    """Exact P((j, Z) | x) of the ideal mechanism: per block (1/ℓ), SS's distribution on [m_j] at
    r = x mod m_j mixed with the uniform one (weight ρ_j^{T_j})."""
    out = {}
    for j, c in enumerate(proto.blocks):
        ss = subset_distribution(ss_constants(c.m, proto.epsilon), x % c.m)
        u = 1 / math.comb(c.m, c.omega)
        mix = proto.fallback[j]
        for z, pr in ss.items():
            out[(j, z)] = ((1 - mix) * pr + mix * u) / proto.ell
    return out


def test_cmss_ideal_mechanism_is_eps_ldp_and_matches_block_p_q():
    proto = CompressedModularSubsetSelection(**CMSS)
    dists = [_cmss_dist(proto, x) for x in range(proto.k)]
    keys = list(dists[0])
    mat = np.array([[d[z] for z in keys] for d in dists])
    assert (mat.max(axis=0) / mat.min(axis=0)).max() <= math.exp(1.0) * (1 + 1e-12)
    for j, c in enumerate(proto.blocks):
        p = sum(pr for (b, z), pr in dists[0].items() if b == j and 0 in z) * proto.ell
        q = sum(pr for (b, z), pr in dists[0].items() if b == j and 1 in z) * proto.ell
        assert (p, q) == (pytest.approx(c.p, rel=1e-12), pytest.approx(c.q, rel=1e-12))


@pytest.mark.parametrize("eps,item", [(0.5, 3), (1.0, 9), (3.0, 13)])
def test_cmss_accepted_subsets_match_ss_with_a_true_random_source(eps, item):
    """Goodness of fit (chi-square, false failure CHI2_ALPHA = 1e-4) of the accepted (j, Z) against
    MSS's block distribution (SS on [m_j] at x mod m_j, 1/ℓ per block) when the PRG is replaced by
    a true random source (rng-drawn uniform ω_j-subsets of [m_j])."""
    proto = CompressedModularSubsetSelection(**{**CMSS, "epsilon": eps})
    src_rng = np.random.default_rng(98)
    table = {}

    def source(seeds, m, omega):
        z = np.sort(np.argsort(src_rng.random((len(seeds), m)), axis=1)[:, :omega], axis=1)
        for s, row in zip(seeds.tolist(), z.tolist()):
            table[s] = tuple(row)
        return z

    assert_sampler_matches(proto, item, lambda b: [(j, table[s]) for j, s in
                                                   zip(b.block.tolist(), b.values[:, 0].tolist())],
                           30_000, seed=21, dist=_cmss_dist(proto, item),
                           sampler=lambda items, rng: proto.randomize(items, rng, source=source))


def test_cmss_accepted_subsets_match_ss_with_the_prg():
    proto = CompressedModularSubsetSelection(**CMSS)
    z = proto.expand(proto.randomize(np.zeros(1, np.int64), np.random.default_rng(0)))
    assert z.shape == (1, proto.omega_max)
    assert_sampler_matches(
        proto, 11, lambda b: [(j, tuple(r[r >= 0])) for j, r in zip(b.block.tolist(),
                                                                    proto.expand(b))],
        30_000, seed=22, dist=_cmss_dist(proto, 11))


def test_cmss_contract_label_and_asr():
    proto = CompressedModularSubsetSelection(**CMSS)
    assert proto.privacy_kind == "computational" and proto.payload_width(2) == 8
    assert_unbiased_and_variance(proto, COUNTS[:14], runs=200, seed=23)
    assert_merge_contract(proto, items_for(COUNTS[:14]), seed=24)
    assert_wire_round_trip(proto, items_for(COUNTS[:14]), seed=25)
    est = proto.estimate(proto.create_accumulator(), stderr=False)
    assert est.diagnostics["privacy"] == "computational"
    # the attack on expanded seeds matches MSS's closed form with the mixed p_j (4σ, binomial)
    rng = np.random.default_rng(26)
    items = np.tile(np.arange(proto.k), 3000)
    emp = attacks.empirical_asr(proto, proto.randomize(items, rng), items, rng)
    a = attacks.closed_form_asr(proto)
    assert abs(emp - a) < 4 * math.sqrt(a * (1 - a) / len(items)), (emp, a)
    # default moduli: the planner's least-MSE pick
    assert CompressedModularSubsetSelection(40, 2.0).moduli


def test_config_size_bound_of_seed_reports_is_the_seed():
    # `privfreq config` checks this O(1) bound before planning: 8-byte seeds fit at any k, while
    # MSS's subsets at k = 2^20, ε = 1 need >= 32,767 bytes.
    from privfreq.protocols.mss import ModularSubsetSelection
    assert CompressedModularSubsetSelection.min_report_bytes(2 ** 20, 1.0) == 8
    assert ModularSubsetSelection.min_report_bytes(2 ** 20, 1.0) > 16 * 1024
