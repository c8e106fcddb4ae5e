"""Incremental totals: versioned round trip, exact merge, refusal of other configs and bad files."""
import io
import json

import numpy as np
import pytest

from privfreq.protocols import totals
from privfreq.protocols.config import CollectionConfig

MSS = CollectionConfig("mss", {"k": 40, "epsilon": 2.0, "moduli": [23, 19]})
GRR = CollectionConfig("grr", {"k": 40, "epsilon": 2.0})


def _totals(config, items, seed):
    p = config.protocol
    acc = p.add_reports(p.create_accumulator(), p.randomize(np.asarray(items), np.random.default_rng(seed)))
    return totals.Totals(config, acc)


def test_round_trip_is_exact(tmp_path):
    t = _totals(MSS, np.arange(500) % 40, 1)
    totals.save(tmp_path / "t.npz", t)
    back = totals.load(tmp_path / "t.npz")
    assert back.fingerprint == MSS.fingerprint and back.n_reports == 500
    np.testing.assert_array_equal(back.counts.counts, t.counts.counts)
    np.testing.assert_array_equal(back.counts.n_block, t.counts.n_block)
    assert back.counts.counts.dtype == np.int64
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_merge_equals_one_accumulator_over_all_reports():
    p = MSS.protocol
    rng = np.random.default_rng(3)
    batches = [p.randomize(rng.integers(0, 40, n), rng) for n in (300, 1, 250)]
    parts = [totals.Totals(MSS, p.add_reports(p.create_accumulator(), b)) for b in batches]
    before = [t.counts.counts.copy() for t in parts]
    merged = totals.merge(totals.loads(totals.dumps(t)) for t in parts)
    whole = p.create_accumulator()
    for b in batches:
        p.add_reports(whole, b)
    np.testing.assert_array_equal(merged.counts.counts, whole.counts)
    np.testing.assert_array_equal(merged.counts.n_block, whole.n_block)
    np.testing.assert_array_equal(merged.estimate().frequencies, p.estimate(whole).frequencies)
    for t, b in zip(parts, before):  # inputs untouched
        np.testing.assert_array_equal(t.counts.counts, b)


def test_merge_of_other_configs_is_refused():
    other_eps = CollectionConfig("mss", {"k": 40, "epsilon": 2.5, "moduli": [23, 19]})
    a = _totals(MSS, [1, 2], 0)
    for b in (_totals(GRR, [1, 2], 0), _totals(other_eps, [1, 2], 0)):
        with pytest.raises(ValueError, match="refusing to merge totals of config"):
            totals.merge([a, b])
    with pytest.raises(ValueError, match="nothing to merge"):
        totals.merge([])


def _rewrite(data, **changes):
    with np.load(io.BytesIO(data)) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    for k, v in changes.items():
        if k in ("counts", "n_block"):
            arrays[k] = v
        else:
            meta[k] = v
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("change, message", [
    ({"format_version": 3}, "format_version 3 is not supported"),
    ({"format": "other"}, "not a privfreq totals file"),
    ({"fingerprint": "0" * 16}, "does not match its config"),
    ({"n_block": np.array([5, 5], dtype=np.int64)}, "disagree with the metadata"),
    ({"counts": np.zeros(3, dtype=np.int64)}, "disagree with the metadata"),
])
def test_bad_files_are_refused(change, message):
    data = totals.dumps(_totals(MSS, np.arange(40), 2))
    with pytest.raises(ValueError, match=message):
        totals.loads(_rewrite(data, **change))


@pytest.mark.parametrize("data", [b"", b"garbage", b"PK\x03\x04" + b"\x00" * 30])
def test_garbage_is_a_value_error(data):
    with pytest.raises(ValueError, match="not a privfreq totals file"):
        totals.loads(data)
