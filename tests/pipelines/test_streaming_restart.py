"""The streaming file watcher across restarts: files (or copies of them) read before a restart are
not read again, and a window's panes continue from the earlier run's counts."""
import glob
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq

from privfreq.pipelines import aggregate
from privfreq.pipelines.cli import main as cli_main
from privfreq.transforms.streaming import INPUTS, window_dir_name
from test_aggregate_streaming import CONFIG, T0, W, _avro, _drop, _json, _records


def _stream(tmp_path, watched, out, n_files):
    cli_main(["aggregate", "--streaming", "--config", str(tmp_path / "config.json"),
              "--input", str(watched / "*.avro"), "--output", str(out),
              "--window-seconds", str(W), "--poll-interval", "0.1",
              "--max-files", str(n_files), "--max-duration", "60", "--event-time", "arrival"])


def test_restarted_watcher_skips_read_files_and_continues_the_window(tmp_path):
    CONFIG.save(str(tmp_path / "config.json"))
    watched, out = tmp_path / "incoming", tmp_path / "live"
    watched.mkdir()
    a, b, c = (_records(np.arange(n) % 6, seed=s) for n, s in ((30, 1), (20, 2), (25, 3)))
    _drop(watched, "a.avro", _avro(a, False), mtime=T0 + 10)
    _drop(watched, "b.avro", _avro(b, False), mtime=T0 + 20)
    _drop(watched, "b-copy.avro", (watched / "b.avro").read_bytes(),
          mtime=T0 + 20)                                     # identical content, same run
    _stream(tmp_path, watched, out, 3)
    pane0 = out / "windows" / window_dir_name(T0, T0 + W, 0)
    assert _json(pane0 / "summary.json")["n_reports_in_window"] == 50  # the copy counted once
    assert len(glob.glob(str(out / INPUTS / "*.json"))) == 2

    # restart: c arrives, and a is re-delivered under another name
    shutil.copy(watched / "a.avro", watched / "a-again.avro")
    os.utime(watched / "a-again.avro", (T0 + 30, T0 + 30))
    _drop(watched, "c.avro", _avro(c, False), mtime=T0 + 40)
    _stream(tmp_path, watched, out, 5)
    names = sorted(os.path.basename(p) for p in glob.glob(str(out / "windows" / "*")))
    assert names == [window_dir_name(T0, T0 + W, 0), window_dir_name(T0, T0 + W, 1)]
    s1 = _json(out / "windows" / names[1] / "summary.json")
    assert s1["n_reports_in_window"] == s1["n_read"] == 75      # a + b + c, each once
    assert s1["window"]["n_reports_earlier_runs"] == 50 and s1["window"]["pane_index"] == 1
    # the continued pane equals one batch run over a, b and c
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "r.avro").write_bytes(_avro(a + b + c, False))
    batch = aggregate.run(["--config", str(tmp_path / "config.json"), "--input",
                           str(tmp_path / "batch" / "r.avro"), "--output", str(tmp_path / "bo")])
    np.testing.assert_array_equal(
        pq.read_table(str(out / "windows" / names[1] / "estimates.parquet")).column("estimate"),
        pq.read_table(f"{batch}/estimates.parquet").column("estimate"))
    # the earlier pane is kept as it was
    assert _json(pane0 / "summary.json")["n_reports_in_window"] == 50
