"""``privfreq simulate --rounds``: evolving items through memoized users inside the Beam
pipeline; rounds.parquet, summary.json (per-round MSE vs prediction, budget) and rounds.png."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli


def _sim(tmp_path, name, *extra):
    out = tmp_path / name
    assert cli.main(["simulate", "--protocol", "loloha", "--k", "32", "--epsilon", "1",
                     "--epsilon-perm", "3", "--n", "20000", "--distribution", "zipf:1.2",
                     "--seed", "3", "--output", str(out), *extra]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_simulate_rounds_outputs_and_mse(tmp_path):
    out, s = _sim(tmp_path, "sim", "--rounds", "4", "--change-rate", "0.2")
    t = pq.read_table(out / "rounds.parquet")
    assert t.column_names == ["round", "item", "estimate", "stderr", "true_frequency"]
    assert t.num_rows == 4 * 32
    assert [r["round"] for r in s["rounds"]] == [0, 1, 2, 3]
    assert all(r["n"] == 20000 for r in s["rounds"])
    ratio = np.mean([r["mse"] for r in s["rounds"]]) / np.mean(
        [r["predicted_mse"] for r in s["rounds"]])
    # 128 item-rounds: the MSE ratio has sd ~ sqrt(2/128) = 0.125; 0.5 is 4 sd
    assert 0.5 < ratio < 1.5
    b = s["budget"]
    g = s["config"]["params"]["g"]
    assert b["epsilon_perm"] == 3.0 and b["cap"] == 3.0 * g and b["n_users"] == 20000
    assert 3.0 <= b["p50"] <= b["p99"] <= b["max"] <= b["cap"]
    assert b["mean"] > 3.0  # some users changed hash value
    assert (out / "rounds.png").stat().st_size > 1000


def test_constant_items_spend_one_key(tmp_path):
    _, s = _sim(tmp_path, "still", "--rounds", "3", "--change-rate", "0")
    b = s["budget"]
    assert b["mean"] == b["max"] == 3.0 and b["at_cap"] == 0


def test_rounds_needs_a_longitudinal_protocol(tmp_path):
    with pytest.raises(ValueError, match="longitudinal"):
        cli.main(["simulate", "--protocol", "grr", "--k", "8", "--epsilon", "1", "--n", "10",
                  "--rounds", "2", "--output", str(tmp_path / "x")])
