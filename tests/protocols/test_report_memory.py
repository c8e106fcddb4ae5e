"""SS-type randomizers refuse, before allocating, batches whose reports alone exceed the memory
bound (issue 15), and work unchanged below it."""
import numpy as np
import pytest

from privfreq.protocols import ss_sampler
from privfreq.protocols.mss import ModularSubsetSelection
from privfreq.protocols.planner import min_payload_bytes
from privfreq.protocols.subset_selection import SubsetSelection, ss_constants


def test_ss_refuses_oversized_batch_before_allocating():
    ss = SubsetSelection(1 << 20, 1.0)          # ω = 282 006 values per report
    items = np.zeros(5000, dtype=np.int64)      # 5000 × 282 006 × 8 B = 10.5 GiB
    with pytest.raises(ValueError, match=r"10\.5 GiB.*batches of at most 475 reports"):
        ss.randomize(items, np.random.default_rng(0))


def test_mss_refuses_oversized_batch_before_allocating():
    mss = ModularSubsetSelection(1 << 20, 1.0, (1048559, 1048571, 1048573))
    with pytest.raises(ValueError, match="MSS: randomizing 4000 reports"):
        mss.randomize(np.zeros(4000, dtype=np.int64), np.random.default_rng(0))


def test_batch_at_the_bound_still_randomizes(monkeypatch):
    monkeypatch.setattr(ss_sampler, "MAX_REPORT_VALUES_BYTES", 8 * 10 * 300)
    ss = SubsetSelection(40, 1.0)                # ω = 11 > 10 values: 300 rows do not fit
    with pytest.raises(ValueError, match="at most 272 reports"):
        ss.randomize(np.zeros(300, dtype=np.int64), np.random.default_rng(0))
    batch = ss.randomize(np.zeros(272, dtype=np.int64), np.random.default_rng(0))
    assert batch.values.shape == (272, 11)


@pytest.mark.parametrize("k,eps", [(1024, 1.0), (22000, 2.0), (50000, 0.5), (1 << 20, 1.0)])
def test_min_payload_bytes_is_a_lower_bound(k, eps):
    """The O(1) bound used before planning is below the payload of the smallest feasible designs
    (ℓ consecutive moduli from ⌈(k+ℓ−1)/ℓ⌉; each block's payload is min(bitmap, indices))."""
    low = min_payload_bytes(k, eps)
    for ell in (2, 3, 4):
        m0 = -(-(k + ell - 1) // ell)
        mean = np.mean([ss_constants(m, eps).payload_width for m in range(m0, m0 + ell)])
        assert low <= mean
