"""`aggregate --totals-in/--totals-out`: a daily run merged with earlier totals equals one run over
all the reports (exact counts, identical estimates); totals of another config are refused."""
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "transforms"))
from _tf_helpers import records_for, write_avro  # noqa: E402

from privfreq.pipelines import cli  # noqa: E402
from privfreq.protocols import totals  # noqa: E402
from privfreq.protocols.config import CollectionConfig  # noqa: E402

RUNNER = "--runner=FnApiRunner"
# Noisy MSS (ε = 2): equality must come from exact integer merging, not from a no-noise shortcut.
MSS = CollectionConfig("mss", {"k": 40, "epsilon": 2.0, "moduli": [23, 19]})


def _estimates(out):
    return pq.read_table(os.path.join(out, "estimates.parquet")).column("estimate").to_numpy()


def test_daily_runs_merged_equal_one_run(tmp_path):
    cfg_path = str(tmp_path / "config.json")
    MSS.save(cfg_path)
    rng = np.random.default_rng(7)
    recs = records_for(MSS, rng.integers(0, 40, 900), seed=11)
    for day, (lo, hi) in enumerate([(0, 400), (400, 650), (650, 900)]):
        os.makedirs(tmp_path / f"day{day}")
        write_avro(tmp_path / f"day{day}" / "r.avro", recs[lo:hi])
    agg = ["aggregate", "--config", cfg_path, RUNNER]
    assert cli.main([*agg, "--input", str(tmp_path / "day*/r.avro"), "--output",
                     str(tmp_path / "all"), "--totals-out", str(tmp_path / "all.npz")]) == 0
    prev = []
    for day in range(3):
        out = str(tmp_path / f"out{day}")
        assert cli.main([*agg, "--input", str(tmp_path / f"day{day}/r.avro"), "--output", out,
                         "--totals-out", str(tmp_path / f"t{day}.npz"),
                         *(["--totals-in", *prev] if prev else [])]) == 0
        prev = [str(tmp_path / f"t{day}.npz")]
    whole = totals.load(tmp_path / "all.npz")
    merged = totals.load(tmp_path / "t2.npz")
    assert merged.n_reports == whole.n_reports == 900
    np.testing.assert_array_equal(merged.counts.counts, whole.counts.counts)
    np.testing.assert_array_equal(merged.counts.n_block, whole.counts.n_block)
    np.testing.assert_array_equal(_estimates(tmp_path / "out2"), _estimates(tmp_path / "all"))
    with open(tmp_path / "out2" / "summary.json") as f:
        s = json.load(f)
    assert s["n_read"] == 250 and s["totals"]["n_reports_total"] == 900
    assert s["totals"]["n_reports_prior"] == 650
    assert os.path.exists(tmp_path / "out2" / "totals.npz")
    # Also without --totals-out: estimates from the earlier totals alone are used the same way.
    p = MSS.protocol
    np.testing.assert_array_equal(p.estimate(merged.counts).frequencies, _estimates(tmp_path / "all"))


def test_totals_of_another_config_are_refused(tmp_path):
    other = CollectionConfig("mss", {"k": 40, "epsilon": 3.0, "moduli": [23, 19]})
    p = other.protocol
    acc = p.add_reports(p.create_accumulator(), p.randomize(np.arange(10), np.random.default_rng(0)))
    totals.save(tmp_path / "other.npz", totals.Totals(other, acc))
    cfg_path = str(tmp_path / "config.json")
    MSS.save(cfg_path)
    write_avro(tmp_path / "r.avro", records_for(MSS, np.arange(10)))
    with pytest.raises(ValueError, match="cannot be merged into a run of config"):
        cli.main(["aggregate", "--config", cfg_path, "--input", str(tmp_path / "r.avro"),
                  "--output", str(tmp_path / "out"), "--totals-in", str(tmp_path / "other.npz"),
                  RUNNER])
    assert not os.path.exists(tmp_path / "out")
