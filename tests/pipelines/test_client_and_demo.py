"""The client path without Beam, the demo end to end on tiny data, and the outputs a person looks
at: ``aggregate`` and ``simulate`` write the same summary keys (simulate adds only its truth-based
ones) and a PNG plot each."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import fastavro
import numpy as np
import pyarrow.parquet as pq

from privfreq.pipelines import cli, demo
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.outputs import SUMMARY_KEYS, TRUTH_KEYS

PNG = b"\x89PNG\r\n\x1a\n"

# A meta-path finder that makes every apache_beam import fail, then the console entry point.
_NO_BEAM = """
import importlib.abc, sys

class NoBeam(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "apache_beam" or name.startswith("apache_beam."):
            raise ImportError("apache_beam is blocked in this test")
        return None

sys.meta_path.insert(0, NoBeam())
from privfreq.pipelines.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.split(".")[0] == "apache_beam"]
sys.exit(code)
"""


def test_encode_runs_where_apache_beam_cannot_be_imported(tmp_path):
    config = CollectionConfig("mss", {"k": 20, "epsilon": 60.0, "moduli": [7, 16]})
    config.save(str(tmp_path / "c.json"))
    items = [0, 3, 3, 19, 7]
    (tmp_path / "items.csv").write_text("item\n" + "\n".join(map(str, items)) + "\n")
    for out in ("r.avro", "r.parquet"):
        got = subprocess.run(
            [sys.executable, "-c", _NO_BEAM, "encode", "--config", str(tmp_path / "c.json"),
             "--input", str(tmp_path / "items.csv"), "--output", str(tmp_path / out),
             "--seed", "1"], capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr
    with open(tmp_path / "r.avro", "rb") as f:
        avro = list(fastavro.reader(f))
    assert len(avro) == len(items) and pq.read_table(tmp_path / "r.parquet").to_pylist() == avro
    assert {r["config_fingerprint"] for r in avro} == {config.fingerprint}


def _json(path):
    with open(path) as f:
        return json.load(f)


def test_aggregate_and_simulate_write_the_documented_summary_and_a_plot(tmp_path):
    config = CollectionConfig("grr", {"k": 6, "epsilon": 2.0})
    config.save(str(tmp_path / "c.json"))
    (tmp_path / "items.csv").write_text("\n".join(str(i % 6) for i in range(300)) + "\n")
    assert cli.main(["encode", "--config", str(tmp_path / "c.json"), "--input",
                     str(tmp_path / "items.csv"), "--output", str(tmp_path / "r.avro")]) == 0
    assert cli.main(["aggregate", "--config", str(tmp_path / "c.json"), "--input",
                     str(tmp_path / "r.avro"), "--output", str(tmp_path / "agg")]) == 0
    assert cli.main(["simulate", "--protocol", "grr", "--k", "6", "--epsilon", "2", "--n", "300",
                     "--output", str(tmp_path / "sim")]) == 0
    agg = _json(tmp_path / "agg" / "summary.json")
    sim = _json(tmp_path / "sim" / "summary.json")
    assert set(agg) == set(SUMMARY_KEYS)
    assert set(sim) == set(SUMMARY_KEYS) | set(TRUTH_KEYS)
    assert agg["totals"] is None and agg["n_read"] == 300
    for d in ("agg", "sim"):
        assert (tmp_path / d / "estimates.png").read_bytes()[:8] == PNG


def test_demo_runs_end_to_end_on_tiny_data(tmp_path, capsys):
    out = tmp_path / "demo"
    demo.run(["--output", str(out), "--k", "64", "--n", "5000", "--seed", "3"])
    printed = capsys.readouterr().out
    assert "encode+aggregate" in printed and "measured/predicted" in printed
    for d in ("simulate", "aggregate"):
        assert sorted(n for n in os.listdir(out / d) if not n.startswith("dead_letters")) == [
            "estimates.parquet", "estimates.png", "summary.json"]
    agg = _json(out / "aggregate" / "summary.json")
    assert agg["n_read"] == agg["n_accepted"] == 5000
    truth = pq.read_table(out / "simulate" / "estimates.parquet").column("true_frequency")
    assert np.isclose(sum(truth.to_pylist()), 1.0)
