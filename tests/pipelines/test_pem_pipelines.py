"""PEM through the pipelines: simulate and aggregate decode by the prefix-extension search and
write the discovered heavy hitters with estimates and 95 % intervals."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli

RUNNER = "--runner=FnApiRunner"
COLUMNS = ["item", "estimate", "stderr", "lower", "upper"]


def test_simulate_pem_lists_the_heavy_hitters(tmp_path):
    """Zipf(1.5) over 2^16 items, n = 60 000, ε = 6, top 5: the five true heaviest (6–39 % of
    users, estimate sd ≈ 0.01) are found; the intervals are estimate ± 1.96 stderr."""
    out = tmp_path / "sim"
    assert cli.main(["simulate", "--protocol", "pem", "--k", "65536", "--epsilon", "6",
                     "--param", "step=4", "--n", "60000", "--distribution", "zipf:1.5",
                     "--seed", "2", "--top", "5", "--output", str(out), RUNNER]) == 0
    t = pq.read_table(out / "estimates.parquet")
    assert t.column_names == COLUMNS + ["true_frequency"]
    d = t.to_pydict()
    assert sorted(d["item"]) == [0, 1, 2, 3, 4]
    assert d["estimate"] == sorted(d["estimate"], reverse=True)
    np.testing.assert_allclose(np.array(d["upper"]) - np.array(d["estimate"]),
                               1.959963984540054 * np.array(d["stderr"]))
    s = json.loads((out / "summary.json").read_text())
    assert s["discovered"]["precision"] == 1.0 and s["discovered"]["top"] == 5
    assert [lv["prefix_bits"] for lv in s["discovered"]["levels"]] == [4, 8, 12, 16]
    assert [r["item"] for r in s["top_items"]] == d["item"]
    assert (out / "estimates.png").stat().st_size > 1000


def test_aggregate_pem_reports(tmp_path):
    """encode → aggregate of PEM reports (OLH and HCMS levels): planted items of 20/12/8 % among
    uniform noise over 2^20 are the top 3, inside their intervals at 5 stderr."""
    cfg = tmp_path / "pem.json"
    assert cli.main(["config", "--protocol", "pem", "--k", "1048576", "--epsilon", "4",
                     "--param", "step=4", "--output", str(cfg)]) == 0
    rng = np.random.default_rng(0)
    n = 40000
    planted = np.array([123456, 987654, 55555])
    items = np.where(rng.random(n) < 0.4, rng.choice(planted, n, p=[0.5, 0.3, 0.2]),
                     rng.integers(0, 1 << 20, n))
    (tmp_path / "items.csv").write_text("item\n" + "\n".join(map(str, items)) + "\n")
    reports = tmp_path / "r.parquet"
    assert cli.main(["encode", "--config", str(cfg), "--input", str(tmp_path / "items.csv"),
                     "--output", str(reports), "--seed", "3"]) == 0
    out = tmp_path / "agg"
    assert cli.main(["aggregate", "--config", str(cfg), "--input", str(reports), "--top", "3",
                     "--output", str(out), RUNNER]) == 0
    d = pq.read_table(out / "estimates.parquet").to_pydict()
    assert list(d) == COLUMNS and d["item"] == planted.tolist()
    truth = np.array([np.mean(items == x) for x in planted])
    assert (np.abs(np.array(d["estimate"]) - truth) <= 5 * np.array(d["stderr"])).all()
    s = json.loads((out / "summary.json").read_text())
    assert s["n_accepted"] == n and s["discovered"]["top"] == 3
    with pytest.raises(ValueError, match="--top"):
        cli.main(["aggregate", "--config", str(cfg), "--input", str(reports), "--top", "0",
                  "--output", str(tmp_path / "x"), RUNNER])
