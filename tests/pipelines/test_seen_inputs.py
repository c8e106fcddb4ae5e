"""Inputs counted at most once: totals remember input digests; `aggregate` refuses or (with
--skip-seen) skips files already in its --totals-in, and reports identical files in one run."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "transforms"))
from _tf_helpers import GRR_EXACT, records_for, write_avro  # noqa: E402

from privfreq.pipelines import cli  # noqa: E402
from privfreq.protocols import totals  # noqa: E402
from privfreq.schemas.files import DIGEST_PREFIX, file_digest  # noqa: E402

RUNNER = "--runner=FnApiRunner"


def _summary(out):
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


@pytest.fixture
def days(tmp_path):
    cfg = str(tmp_path / "config.json")
    GRR_EXACT.save(cfg)
    recs = records_for(GRR_EXACT, np.arange(300) % 8)
    for d, (lo, hi) in enumerate([(0, 100), (100, 220), (220, 300)]):
        os.makedirs(tmp_path / f"day{d}")
        write_avro(tmp_path / f"day{d}" / "r.avro", recs[lo:hi])
    return tmp_path, cfg


def _agg(cfg, pattern, out, *extra):
    return cli.main(["aggregate", "--config", cfg, "--input", str(pattern), "--output", str(out),
                     RUNNER, *map(str, extra)])


def test_totals_record_input_digests(days):
    tmp, cfg = days
    assert _agg(cfg, tmp / "day*/r.avro", tmp / "out", "--totals-out", tmp / "t.npz") == 0
    t = totals.load(tmp / "t.npz")
    assert sorted(f.path for f in t.inputs) == [str(tmp / f"day{d}" / "r.avro") for d in range(3)]
    assert all(f.digest.startswith(DIGEST_PREFIX) for f in t.inputs) and t.untracked_reports == 0
    path = str(tmp / "day0" / "r.avro")
    assert {f.path: f.digest for f in t.inputs}[path] == file_digest(
        lambda: open(path, "rb"), os.path.getsize(path))
    s = _summary(tmp / "out")
    assert s["inputs"]["n_files"] == 3 and s["inputs"]["duplicates"] == []
    assert s["inputs"]["n_bytes"] == sum(f.size for f in t.inputs)


def test_seen_inputs_are_refused_naming_them(days):
    tmp, cfg = days
    assert _agg(cfg, tmp / "day0/r.avro", tmp / "o0", "--totals-out", tmp / "t0.npz") == 0
    shutil.copy(tmp / "day0" / "r.avro", tmp / "day1" / "copy.avro")   # same content, new name
    for pattern in (tmp / "day0/r.avro", tmp / "day1/*.avro"):
        with pytest.raises(ValueError, match="already counted in --totals-in") as e:
            _agg(cfg, pattern, tmp / "o1", "--totals-in", tmp / "t0.npz")
        assert str(tmp / "day0" / "r.avro") in str(e.value)  # where it was counted
        assert "--skip-seen" in str(e.value)
    assert "copy.avro" in str(e.value) and not os.path.exists(tmp / "o1")


def test_skip_seen_counts_only_new_inputs_and_totals_match_one_run(days):
    tmp, cfg = days
    assert _agg(cfg, tmp / "day*/r.avro", tmp / "all", "--totals-out", tmp / "all.npz") == 0
    assert _agg(cfg, tmp / "day0/r.avro", tmp / "o0", "--totals-out", tmp / "t0.npz") == 0
    shutil.copy(tmp / "day0" / "r.avro", tmp / "day1" / "again.avro")
    # day 1 is re-delivered with a copy of day 0; day 2 arrives; one run over both with --skip-seen
    assert _agg(cfg, tmp / "day[12]/*.avro", tmp / "o1", "--totals-in", tmp / "t0.npz",
                "--totals-out", tmp / "t1.npz", "--skip-seen") == 0
    s = _summary(tmp / "o1")
    assert s["inputs"]["skipped_seen"] == [str(tmp / "day1" / "again.avro")]
    assert s["n_read"] == 200 and s["totals"]["n_reports_total"] == 300
    merged, whole = totals.load(tmp / "t1.npz"), totals.load(tmp / "all.npz")
    np.testing.assert_array_equal(merged.counts.counts, whole.counts.counts)
    assert sorted(f.key for f in merged.inputs) == sorted(f.key for f in whole.inputs)
    # the same run again skips everything: nothing new is counted
    assert _agg(cfg, tmp / "day*/*.avro", tmp / "o2", "--totals-in", tmp / "t1.npz",
                "--skip-seen") == 0
    s = _summary(tmp / "o2")
    assert s["n_read"] == 0 and len(s["inputs"]["skipped_seen"]) == 4
    assert s["totals"]["n_reports_total"] == 300


def test_identical_files_in_one_run_are_reported_and_counted_once_with_skip_seen(days):
    tmp, cfg = days
    shutil.copy(tmp / "day0" / "r.avro", tmp / "day0" / "r2.avro")
    pair = [str(tmp / "day0" / "r.avro"), str(tmp / "day0" / "r2.avro")]
    assert _agg(cfg, tmp / "day0/*.avro", tmp / "o") == 0
    s = _summary(tmp / "o")
    assert s["inputs"]["duplicates"] == [pair] and s["n_read"] == 200  # reported, both counted
    assert _agg(cfg, tmp / "day0/*.avro", tmp / "o1", "--skip-seen",
                "--totals-out", tmp / "t.npz") == 0
    s = _summary(tmp / "o1")
    assert s["inputs"]["duplicates"] == [pair] and s["n_read"] == 100
    assert s["inputs"]["skipped_duplicates"] == [pair[1]]
    assert [f.path for f in totals.load(tmp / "t.npz").inputs] == [pair[0]]


def test_totals_holding_the_same_input_are_not_merged(days):
    tmp, cfg = days
    for name in ("a", "b"):
        assert _agg(cfg, tmp / "day0/r.avro", tmp / f"o{name}",
                    "--totals-out", tmp / f"{name}.npz") == 0
    with pytest.raises(ValueError, match="both hold input .*day0/r.avro"):
        _agg(cfg, tmp / "day1/r.avro", tmp / "o", "--totals-in", tmp / "a.npz", tmp / "b.npz")
