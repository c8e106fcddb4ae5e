"""One hostile report: the measured worst-case change of any item's estimate, over every report the
server accepts (every payload of every block that decode_payloads accepts; OLH: every hashed value
for 48 random seeds), never exceeds protocols.influence.influence_bound, equals
worst_case_influence where the enumeration is exhaustive, and the counting protocols' closed-form
bound is attained (all honest reports alike)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from privfreq.protocols.base import Reason, ReportBatch, protocol_ids
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.influence import influence_bound, worst_case_influence

CONFIGS = {
    "grr": {"k": 6, "epsilon": 1.0},
    "ss": {"k": 8, "epsilon": 1.0},
    "oue": {"k": 10, "epsilon": 1.0},
    "sue": {"k": 10, "epsilon": 1.0},
    "olh": {"k": 8, "epsilon": 1.0},
    "hr": {"k": 8, "epsilon": 1.0},
    "pgr": {"k": 6, "epsilon": 1.0},
    "rappor": {"k": 6, "epsilon": 2.0, "bloom_bits": 8, "hashes": 2, "cohorts": 2, "p": 0.25,
               "q": 0.75},
    "mss": {"k": 14, "epsilon": 1.0, "moduli": [7, 8]},
    "lgrr": {"k": 6, "epsilon_perm": 2.0, "epsilon": 1.0},
    "losue": {"k": 10, "epsilon_perm": 2.0, "epsilon": 1.0},
    "lsue": {"k": 10, "epsilon_perm": 2.0, "epsilon": 1.0},
    "loloha": {"k": 8, "epsilon_perm": 2.0, "epsilon": 1.0},
    "biloloha": {"k": 8, "epsilon_perm": 2.0, "epsilon": 1.0},
    "dbitflip": {"k": 6, "epsilon_perm": 2.0, "d": 1},
    "hcms": {"k": 8, "epsilon": 1.0, "hashes": 2, "buckets": 16},
    "cms": {"k": 8, "epsilon": 1.0, "hashes": 2, "buckets": 8},
    "pem": {"k": 8, "epsilon": 1.0, "step": 1},
    "ass": {"k": 8, "epsilon": 1.0, "omega": 2},
    "aue": {"k": 10, "epsilon": 1.0, "p_true": 0.8},
    "alh": {"k": 8, "epsilon": 1.0, "g": 5},
    "athe": {"k": 10, "epsilon": 1.0, "theta": 0.6},
    "pi_rappor": {"k": 4, "epsilon": 1.5},
    "css": {"k": 8, "epsilon": 1.0},
    "cmss": {"k": 14, "epsilon": 1.0, "moduli": [7, 8]},
    "smp": {"attributes": ["a", "b"], "domains": [3, 4], "epsilon": 1.0, "inner": "grr"},
    "spl": {"attributes": ["a", "b"], "domains": [3, 4], "epsilon": 1.0, "inner": "grr"},
    "rsfd": {"attributes": ["a", "b"], "domains": [3, 4], "epsilon": 1.0},
    "allomfree": {"attributes": ["a", "b"], "domains": [3, 4], "epsilon": 1.0,
                  "epsilon_perm": 2.0, "inner": "lgrr"},
}
# Payloads too wide to enumerate (a 63-bit PRG seed): 256 random accepted payloads instead.
SAMPLED_PAYLOADS = {"css", "cmss"}
CONFIGS_MSS3 = {"k": 19, "epsilon": 2.0, "moduli": [5, 7, 9]}
N = 300
# MSS/RAPPOR decode iteratively (LSMR, tolerance 1e-10 relative); the counting estimators are exact.
SOLVER_TOL = 1e-7


def test_every_registered_protocol_is_covered():
    assert sorted(CONFIGS) == protocol_ids()


def _accepted_reports(protocol, rng) -> ReportBatch:
    """Every accepted report (payloads <= 2 bytes: exhaustive), seeds sampled where unbounded."""
    seeds = [0] if not protocol.uses_seed else rng.integers(0, protocol.seed_bound(), 48).tolist()
    blocks, seed_col, values = [], [], []
    for j in range(protocol.n_blocks):
        w = protocol.payload_width(j)
        if protocol.protocol_id in SAMPLED_PAYLOADS:
            raw = rng.integers(0, 256, (256, w), dtype=np.uint8)
            raw[:, -1] &= 0x7F                     # seeds < 2^63 (little-endian top byte)
        else:
            assert w <= 2, (protocol.protocol_id, w)
            raw = np.array(list(itertools.product(range(256), repeat=w)), dtype=np.uint8)
        vals, why = protocol.decode_payloads(j, raw)
        ok = np.asarray(why) == Reason.OK
        vals = np.asarray(vals)[ok]
        for s in seeds:
            blocks.append(np.full(len(vals), j))
            seed_col.append(np.full(len(vals), s))
            values.append(vals)
    width = max(v.shape[1] for v in values)
    values = [np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=-1) for v in values]
    return ReportBatch(np.concatenate(blocks).astype(np.int64),
                       np.concatenate(seed_col).astype(np.int64), np.concatenate(values))


def _estimate(protocol, acc):
    if protocol.protocol_id == "mss":
        return protocol.estimate(acc, stderr=False).frequencies
    if protocol.protocol_id == "rappor":
        return protocol.estimate(acc, stderr=False).frequencies
    return protocol.estimate(acc).frequencies


def _measured(protocol, acc, hostile: ReportBatch) -> np.ndarray:
    """Per item, the largest |change| of the estimate over the hostile reports, one at a time."""
    base = _estimate(protocol, acc)
    worst = np.zeros(protocol.k)
    for i in range(len(hostile)):
        acc2 = protocol.add_reports(acc.copy(), hostile.take(slice(i, i + 1)))
        worst = np.maximum(worst, np.abs(_estimate(protocol, acc2) - base))
    return worst


def _datasets(protocol, hostile, rng):
    """Honest Zipf-like reports, and N copies of one accepted report (extreme support counts)."""
    if getattr(protocol, "multi_attribute", False):  # one Zipf-like column per attribute
        items = np.stack([np.minimum(rng.zipf(1.5, N) - 1, k - 1) for k in protocol.domains], 1)
    else:
        items = np.minimum(rng.zipf(1.5, N) - 1, protocol.k - 1)
    honest = protocol.add_reports(protocol.create_accumulator(), protocol.randomize(items, rng))
    same = hostile.take(np.zeros(N, dtype=np.int64))
    if protocol.n_blocks > 1:  # keep every block non-empty (the LS bounds need the weights)
        per = [np.flatnonzero(hostile.block == j)[0] for j in range(protocol.n_blocks)]
        same = hostile.take(np.resize(np.array(per), N))
    alike = protocol.add_reports(protocol.create_accumulator(), same)
    return {"honest": honest, "alike": alike}


@pytest.mark.parametrize("pid", sorted(CONFIGS))
def test_one_hostile_report_moves_no_estimate_beyond_the_bound(pid):
    _check(CollectionConfig(pid, CONFIGS[pid]).protocol, seed=sorted(CONFIGS).index(pid))


def test_mss_three_blocks():
    _check(CollectionConfig("mss", CONFIGS_MSS3).protocol, seed=99)


def _check(protocol, seed):
    rng = np.random.default_rng(seed)
    hostile = _accepted_reports(protocol, rng)
    exhaustive = not protocol.uses_seed and protocol.protocol_id not in SAMPLED_PAYLOADS
    for name, acc in _datasets(protocol, hostile, rng).items():
        bound = influence_bound(protocol, acc.n_block)
        measured = _measured(protocol, acc, hostile)
        exact = worst_case_influence(protocol, acc)
        tol = SOLVER_TOL * max(1.0, float(measured.max()))
        assert measured.max() <= bound + tol, (name, measured.max(), bound)
        assert exact.max() <= bound * (1 + 1e-12), (name, exact.max(), bound)
        assert (measured <= exact + tol).all(), name
        if exhaustive:
            np.testing.assert_allclose(measured, exact, rtol=1e-6, atol=tol, err_msg=name)
        if name == "alike" and protocol.protocol_id not in ("mss", "cmss", "rappor"):
            # closed form attained: some item's support count is 0 (or n) and a report flips it
            assert measured.max() >= bound * (1 - 1e-9), (name, measured.max(), bound)


@pytest.mark.parametrize("pid", ["grr", "ss", "oue", "olh", "pgr", "hr"])
def test_counting_bounds_scale_as_one_over_n(pid):
    p = CollectionConfig(pid, CONFIGS[pid]).protocol
    assert influence_bound(p, 999) == pytest.approx(influence_bound(p, 99) / 10)


def test_ls_bound_needs_every_block_and_small_k():
    p = CollectionConfig("mss", CONFIGS["mss"]).protocol
    with pytest.raises(ValueError, match="n_block"):
        influence_bound(p, [10, 0])
    big = CollectionConfig("mss", {"k": 5000, "epsilon": 1.0, "moduli": [4999, 5003]}).protocol
    with pytest.raises(ValueError, match="k must be <= 4096"):
        influence_bound(big, [10, 10])
