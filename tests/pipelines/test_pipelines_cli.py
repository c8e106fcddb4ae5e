"""CLI smoke tests (cli.main / run) on tiny data, bad inputs, invalid configs, atomic outputs."""
import json
import os
import sys

import fastavro
import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "transforms"))
from _tf_helpers import records_for, write_avro  # noqa: E402

from privfreq.pipelines import cli, simulate  # noqa: E402
from privfreq.protocols.config import CollectionConfig  # noqa: E402

RUNNER = "--runner=FnApiRunner"


def _config(tmp_path, *args):
    path = str(tmp_path / "config.json")
    assert cli.main(["config", *args, "--output", path]) == 0
    return path, CollectionConfig.load(path)


def _json(path):
    with open(path) as f:
        return json.load(f)


def _dead_letters(out):
    recs = []
    for name in sorted(os.listdir(out)):
        if name.startswith("dead_letters"):
            with open(os.path.join(out, name), "rb") as f:
                recs += list(fastavro.reader(f))
    return recs


def test_config_encode_aggregate_no_noise(tmp_path):
    path, cfg = _config(tmp_path, "--protocol", "grr", "--k", "6", "--epsilon", "60")
    assert _json(path)["fingerprint"] == cfg.fingerprint
    items = np.array([0, 1, 1, 2, 2, 2, 5, 5, 5, 5])
    (tmp_path / "items.csv").write_text("item\n" + "\n".join(map(str, items)) + "\n")
    assert cli.main(["encode", "--config", path, "--input", str(tmp_path / "items.csv"),
                     "--output", str(tmp_path / "r1.avro"), "--seed", "1"]) == 0
    out = str(tmp_path / "agg")
    assert cli.main(["aggregate", "--config", path, "--input", str(tmp_path / "r*.avro"),
                     "--output", out, RUNNER]) == 0
    t = pq.read_table(os.path.join(out, "estimates.parquet"))
    assert t.column_names == ["item", "estimate", "stderr"]
    np.testing.assert_allclose(t.column("estimate").to_numpy(),
                               np.bincount(items, minlength=6) / 10, atol=1e-9)
    s = _json(os.path.join(out, "summary.json"))
    assert (s["n_read"], s["n_accepted"], s["n_rejected"]) == (10, 10, 0)
    assert s["protocol"] == "grr" and s["config"]["fingerprint"] == cfg.fingerprint
    assert s["top_items"][0]["item"] == 5 and s["decode_seconds"] >= 0
    assert _dead_letters(out) == []
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_aggregate_routes_bad_reports_to_dead_letters(tmp_path):
    path, cfg = _config(tmp_path, "--protocol", "mss", "--k", "20", "--epsilon", "0.5",
                        "--moduli", "7,16")
    good = records_for(cfg, np.arange(100) % 20)
    other = CollectionConfig("mss", {"k": 20, "epsilon": 0.6, "moduli": [7, 16]})
    bad = [records_for(other, [3])[0],                           # other fingerprint
           {**good[0], "block": 5},                              # j out of range
           {**good[0], "block": 0, "payload": b"\xff"},          # 7 bits set + padding bit
           {**good[0], "block": 1, "payload": b"\x01"}]          # wrong size
    write_avro(tmp_path / "r1.avro", good + bad)
    write_avro(tmp_path / "r2.avro", good, sync_interval=30)
    raw = (tmp_path / "r2.avro").read_bytes()
    (tmp_path / "r2.avro").write_bytes(raw[:len(raw) // 2])     # truncated
    out = str(tmp_path / "agg")
    assert cli.main(["aggregate", "--config", path, "--input", str(tmp_path / "r*.avro"),
                     "--output", out, RUNNER]) == 0
    s = _json(os.path.join(out, "summary.json"))
    assert s["n_accepted"] + s["n_rejected"] == s["n_read"]
    # the cut falls in the sync marker after a whole block: a damaged region that loses 0 reports
    lost = s["rejected_by_reason"].pop("TRUNCATED_RECORDS", 0)
    assert s["rejected_by_reason"] == {"FINGERPRINT_MISMATCH": 1, "BLOCK_OUT_OF_RANGE": 1,
                                       "BAD_PADDING": 1, "BAD_LENGTH": 1}
    assert lost == 0 and s["unreadable_regions"] == {"TRUNCATED_RECORDS": 1}
    dead = _dead_letters(out)
    assert sorted(d["reason"] for d in dead) == sorted(
        ["FINGERPRINT_MISMATCH", "BLOCK_OUT_OF_RANGE", "BAD_PADDING", "BAD_LENGTH",
         "TRUNCATED_RECORDS"])
    assert all(d["message"] and d["source"] for d in dead)


def test_simulate_writes_summary_plot_and_truth(tmp_path):
    out = str(tmp_path / "sim")
    assert cli.main(["simulate", "--protocol", "mss", "--k", "64", "--epsilon", "2",
                     "--moduli", "31,37", "--n", "20000", "--distribution", "zipf:1.2",
                     "--seed", "3", "--output", out, RUNNER]) == 0
    s = _json(os.path.join(out, "summary.json"))
    assert s["n_read"] == s["n_accepted"] == 20000 and s["n_rejected"] == 0
    assert s["predicted_mse"] > 0 and s["predicted_mse_kind"].startswith("exact")
    # MSE of 64 items: mean of 64 roughly chi-square terms; 0.4x-2.5x of the prediction
    # fails with probability far below 1e-6 at this k (relative sd of the mean ~ 0.2).
    assert 0.4 < s["mse"] / s["predicted_mse"] < 2.5
    t = pq.read_table(os.path.join(out, "estimates.parquet"))
    assert t.column_names == ["item", "estimate", "stderr", "true_frequency"]
    assert abs(sum(t.column("true_frequency").to_pylist()) - 1) < 1e-9
    with open(os.path.join(out, "estimates.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_simulate_multi_processing_runner(tmp_path):
    out = str(tmp_path / "mp")
    simulate.run(["--protocol", "grr", "--k", "5", "--epsilon", "60", "--n", "3000",
                  "--distribution", "spike", "--seed", "1", "--output", out, RUNNER,
                  "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                 save_main_session=False)
    s = _json(os.path.join(out, "summary.json"))
    assert s["top_items"][0] == {"item": 0, "estimate": pytest.approx(1.0, abs=1e-9),
                                 "stderr": pytest.approx(s["top_items"][0]["stderr"]),
                                 "true_frequency": 1.0}
    assert s["mse"] < 1e-18


def test_output_replaces_old_dir_and_failed_run_leaves_it(tmp_path):
    out = tmp_path / "sim"
    args = ["simulate", "--protocol", "grr", "--k", "4", "--epsilon", "1", "--n", "100",
            "--seed", "0", "--output", str(out), RUNNER]
    assert cli.main(args) == 0
    (out / "marker").write_text("old")
    assert cli.main(args) == 0
    assert not (out / "marker").exists()
    (out / "marker").write_text("old")
    path, _ = _config(tmp_path, "--protocol", "grr", "--k", "4", "--epsilon", "1")
    with pytest.raises(Exception):  # no file matches: the job fails
        cli.main(["aggregate", "--config", path, "--input", str(tmp_path / "none*.avro"),
                  "--output", str(out), RUNNER])
    assert (out / "marker").read_text() == "old"
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_plan_and_config_use_the_planner(tmp_path, capsys):
    assert cli.main(["plan", "--k", "40", "--epsilon", "1", "--ell", "2", "--top", "2",
                     "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert 1 <= len(rows) <= 2 and all(len(r["moduli"]) == 2 for r in rows)
    _, cfg = _config(tmp_path, "--protocol", "mss", "--k", "40", "--epsilon", "1")
    assert len(cfg.params["moduli"]) >= 1  # valid: CollectionConfig validated the moduli


@pytest.mark.parametrize("args,field", [
    (["--protocol", "mss", "--k", "20", "--epsilon", "1", "--moduli", "6,9"], "pairwise coprime"),
    (["--protocol", "mss", "--k", "20", "--epsilon", "1", "--moduli", "3,5"], "product of the moduli"),
    (["--protocol", "mss", "--k", "20", "--epsilon", "0", "--moduli", "7,16"], "epsilon must be"),
    (["--protocol", "grr", "--k", "1", "--epsilon", "1"], "k must be"),
    (["--protocol", "nope", "--k", "10", "--epsilon", "1"], "protocol: unknown id"),
    (["--protocol", "grr", "--k", "10", "--epsilon", "1", "--param", "colour=3"], "colour"),
    (["--protocol", "mss", "--k", "20", "--epsilon", "1", "--moduli", "7,x"], "moduli"),
])
def test_invalid_configs_raise_value_error_naming_the_field(tmp_path, args, field):
    with pytest.raises(ValueError, match=field):
        cli.main(["config", *args, "--output", str(tmp_path / "c.json")])
    assert not (tmp_path / "c.json").exists()


def test_invalid_simulate_arguments(tmp_path):
    base = ["simulate", "--protocol", "grr", "--k", "4", "--epsilon", "1", "--seed", "0",
            "--output", str(tmp_path / "s"), RUNNER]
    with pytest.raises(ValueError, match="distribution"):
        cli.main(base + ["--n", "10", "--distribution", "normal"])
    with pytest.raises(ValueError, match="n must be"):
        cli.main(base + ["--n", "0"])


def test_encode_rejects_out_of_domain_items(tmp_path):
    path, _ = _config(tmp_path, "--protocol", "grr", "--k", "4", "--epsilon", "1")
    (tmp_path / "items.csv").write_text("item\n1\n4\n")
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        cli.main(["encode", "--config", path, "--input", str(tmp_path / "items.csv"),
                  "--output", str(tmp_path / "r.avro")])
    assert not (tmp_path / "r.avro").exists()


def test_unknown_subcommand():
    assert cli.main(["frobnicate"]) == 2


def test_console_script_prints_config_errors_without_traceback(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "privfreq.pipelines.cli", "config", "--protocol", "grr",
                          "--k", "1", "--epsilon", "1", "--output", str(tmp_path / "c.json")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "k must be" in out.stderr and "Traceback" not in out.stderr
