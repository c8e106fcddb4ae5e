"""``privfreq evaluate --grid longitudinal`` on a tiny grid: cells, per-round rows, the report's
three sections, ledgers, paper cells only where the calibration differs, fixed seeds."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli
from privfreq.pipelines.evaluate_longitudinal import expected_keys, run_trial

TINY = ["evaluate", "--grid", "longitudinal", "--protocols", "lgrr,losue,loloha,dbitflip",
        "--k", "16", "--epsilons-perm", "1,3", "--alphas", "0.4", "--change-rates", "0.2",
        "--trials", "3", "--n", "600", "--rounds", "3", "--seed", "7"]


def test_tiny_grid(tmp_path):
    out = tmp_path / "eval"
    assert cli.main(TINY + ["--output", str(out)]) in (None, 0, str(out))
    cells = pq.read_table(out / "cells.parquet").to_pylist()
    # lgrr and loloha: exact + paper; losue: exact only (paper = same channel); dbitflip: no α
    assert sorted({(c["protocol"], c["calibration"]) for c in cells}) == [
        ("dbitflip", "exact"), ("lgrr", "exact"), ("lgrr", "paper"), ("loloha", "exact"),
        ("loloha", "paper"), ("losue", "exact")]
    assert len(cells) == 6 * 2 and all(c["trials"] == 3 and c["ledger_ok"] for c in cells)
    assert all(c["alpha"] is None for c in cells if c["protocol"] == "dbitflip")
    # 3 trials × 3 rounds × 16 items: the mean MSE is within a factor 2 of its formula
    assert all(0.5 < c["ratio"] < 2 for c in cells)
    assert all(c["spent_max"] <= c["cap"] + 1e-9 for c in cells)
    paper = [c for c in cells if c["protocol"] == "lgrr" and c["calibration"] == "paper"]
    assert all(c["real_epsilon"] < c["epsilon"] for c in paper)  # paper over-randomizes, k > 2
    rounds = pq.read_table(out / "rounds.parquet").to_pylist()
    assert len(rounds) == 12 * 3 and {r["round"] for r in rounds} == {0, 1, 2}
    report = (out / "report.md").read_text()
    for heading in ("## 1. Per-round MSE vs formula", "## 2. Budget spent",
                    "## 3. Exact vs paper calibration", "Verdict:"):
        assert heading in report
    assert "WALL_SECONDS" not in report and "BUDGET_VERDICT" not in report
    assert json.loads((out / "run_meta.json").read_text())["grid"]["k"] == [16]


def test_trials_are_seeded_and_bad_grids_refused(tmp_path):
    spec = dict(protocol="loloha", calibration="exact", k=32, epsilon_perm=2.0, alpha=0.4,
                epsilon=0.8, change_rate=0.1, rounds=3, n=300, trial=1, seed=3)
    a, b = run_trial(spec), run_trial(spec)
    assert a["mse"] == b["mse"] and a["spent_mean"] == b["spent_mean"]
    assert run_trial({**spec, "trial": 2})["mse"] != a["mse"]
    with pytest.raises(ValueError, match="not longitudinal"):
        cli.main(["evaluate", "--grid", "longitudinal", "--protocols", "grr",
                  "--output", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="α must be"):
        cli.main(["evaluate", "--grid", "longitudinal", "--alphas", "1.2",
                  "--output", str(tmp_path / "x")])


def test_expected_keys_limits():
    # one round: one key; L-GRR's expected distinct values grow with the horizon, LOLOHA's stay
    # below g
    assert expected_keys("lgrr", 64, 3, 1, 0.5) == pytest.approx(1.0)
    assert expected_keys("loloha", 64, 3, 1, 0.5) == pytest.approx(1.0)
    long_lgrr = expected_keys("lgrr", 64, 3, 2000, 0.25)
    assert 40 < long_lgrr <= 64 and expected_keys("loloha", 64, 3, 2000, 0.25) <= 3
    assert np.isfinite(expected_keys("lgrr", 1024, 3, 10, 0.1))
