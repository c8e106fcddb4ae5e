"""Several attributes per user through the CLI: config with --attributes, simulate (independent
and correlated attributes), encode from one column per attribute, aggregate; per-attribute
estimates, summaries and figure."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli
from privfreq.protocols.config import CollectionConfig

RUNNER = "--runner=FnApiRunner"


def _config(tmp_path, name, *args):
    path = tmp_path / name
    assert cli.main(["config", *args, "--output", str(path)]) == 0
    return path


def test_config_with_attributes_reports_the_tuple_epsilon(tmp_path, capsys):
    path = _config(tmp_path, "rsfd.json", "--protocol", "rsfd", "--attributes",
                   "age:8,country:200,app:300", "--epsilon", "2", "--fake", "oue-r")
    out = capsys.readouterr().out
    proto = CollectionConfig.load(path).protocol
    assert proto.attributes == ("age", "country", "app") and proto.domains == (8, 200, 300)
    assert proto.fake == "oue-r"
    assert f"tuple_epsilon={np.log(3 * np.expm1(2) + 1):.4g}" in out
    smp = CollectionConfig.load(_config(tmp_path, "smp.json", "--protocol", "smp", "--attributes",
                                        "8,200", "--epsilon", "1", "--inner", "grr,oue")).protocol
    assert smp.attributes == ("a1", "a2")
    assert [p.protocol_id for p in smp.inner_protocols] == ["grr", "oue"]
    allom = CollectionConfig.load(_config(tmp_path, "al.json", "--protocol", "allomfree",
                                          "--attributes", "age:8,app:300", "--epsilon", "1",
                                          "--epsilon-perm", "3")).protocol
    assert allom.epsilon_perm == 3.0 and allom.epsilon == 1.0


@pytest.mark.parametrize("args, match", [
    (["--protocol", "smp", "--attributes", "a:8,a:4"], "duplicate attribute"),
    (["--protocol", "smp", "--attributes", "a:8,b:1"], "domain k >= 2"),
    (["--protocol", "smp", "--attributes", "a:8,b:x"], "expected name:k"),
    (["--protocol", "smp", "--attributes", "a:8", "--k", "8"], "either --k or --attributes"),
    (["--protocol", "grr", "--attributes", "a:8,b:4"], "multi-attribute protocol"),
    (["--protocol", "grr", "--k", "8", "--inner", "grr"], "--inner needs --attributes"),
    (["--protocol", "smp", "--attributes", "a:8,b:4", "--fake", "grr"], "does not apply"),
    (["--protocol", "smp"], "--k is required"),
])
def test_bad_attribute_configs(tmp_path, args, match):
    with pytest.raises(ValueError, match=match):
        cli.main(["config", *args, "--epsilon", "1", "--output", str(tmp_path / "x.json")])


def test_simulate_smp_per_attribute_outputs(tmp_path):
    """Per-attribute MSE against its formula: 3 attributes of 6–40 items at n = 20 000, ε = 2;
    the ratio of the pooled MSE to the prediction has sd < 0.25 (a few dozen items), so
    [0.4, 1.9] is a > 3 sd band."""
    out = tmp_path / "sim"
    assert cli.main(["simulate", "--protocol", "smp", "--attributes", "age:6,country:40,app:30",
                     "--epsilon", "2", "--n", "20000", "--seed", "4", "--correlation", "0.6",
                     "--output", str(out), RUNNER]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["tuple_epsilon"] == 2.0 and s["truth"]["correlation"] == 0.6
    assert [a["attribute"] for a in s["attributes"]] == ["age", "country", "app"]
    assert sum(a["n"] for a in s["attributes"]) == 20000
    for a in s["attributes"]:
        assert 0.4 < a["mse"] / a["predicted_mse"] < 1.9, a
        assert len(a["top_items"]) == min(10, a["k"])
    t = pq.read_table(out / "estimates.parquet")
    assert t.column_names == ["attribute", "item", "estimate", "stderr", "true_frequency"]
    assert t.num_rows == 76
    df = t.to_pydict()
    for name, k in (("age", 6), ("country", 40), ("app", 30)):
        rows = [i for i, a in enumerate(df["attribute"]) if a == name]
        assert [df["item"][i] for i in rows] == list(range(k))
        assert sum(df["true_frequency"][i] for i in rows) == pytest.approx(1.0)
    assert (out / "estimates.png").stat().st_size > 1000


def test_simulated_correlation_ties_the_attributes(tmp_path):
    """The copula's ρ shows in the attributes' rank correlation: ρ = 0.9 vs 0."""
    from privfreq.transforms.simulate import Distribution, ItemSampler
    proto = CollectionConfig("smp", {"attributes": ["a", "b"], "domains": [20, 20],
                                     "epsilon": 1.0, "inner": "grr"}).protocol
    rng = np.random.default_rng(0)
    tied = ItemSampler(proto, Distribution.parse("zipf:1.1"), 0.9).draw(20000, rng)
    free = ItemSampler(proto, Distribution.parse("zipf:1.1"), 0.0).draw(20000, rng)
    assert np.corrcoef(tied.T)[0, 1] > 0.5
    assert abs(np.corrcoef(free.T)[0, 1]) < 0.05   # sd of r at n = 20 000: 0.007


def _people(path, n=6000, seed=0):
    rng = np.random.default_rng(seed)
    age = np.minimum(rng.geometric(0.4, n) - 1, 7)
    country = np.minimum(rng.geometric(0.1, n) - 1, 49)
    table = pa.table({"user_id": np.arange(n), "age": age, "country": country})
    if str(path).endswith(".csv"):
        import pyarrow.csv as pacsv
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return np.stack([age, country], 1)


@pytest.mark.parametrize("protocol, extra", [("rsfd", ["--fake", "oue-z"]),
                                             ("spl", ["--inner", "grr"])])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_encode_columns_and_aggregate(tmp_path, protocol, extra, fmt):
    """Almost no noise (ε = 30): the estimates match the input's frequencies per attribute."""
    cfg = _config(tmp_path, "c.json", "--protocol", protocol, "--attributes", "age:8,country:50",
                  "--epsilon", "30", *extra)
    x = _people(tmp_path / f"people.{fmt}")
    reports = tmp_path / "r.avro"
    assert cli.main(["encode", "--config", str(cfg), "--input", str(tmp_path / f"people.{fmt}"),
                     "--output", str(reports), "--seed", "1"]) == 0
    out = tmp_path / "agg"
    assert cli.main(["aggregate", "--config", str(cfg), "--input", str(reports), "--output",
                     str(out), RUNNER]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_accepted"] == len(x) and s["n_rejected"] == 0
    est = pq.read_table(out / "estimates.parquet").to_pydict()
    truth = np.concatenate([np.bincount(x[:, 0], minlength=8), np.bincount(x[:, 1], minlength=50)])
    if protocol == "rsfd":  # OUE keeps a 1 w.p. 1/2 at any ε: within 5 sd of the analytic
        # variance at the true frequencies (58 items: false failure 3e-5)
        f = truth / len(x)
        sd = np.sqrt(CollectionConfig.load(cfg).protocol.variance(len(x), f))
        assert (np.abs(np.array(est["estimate"]) - f) <= 5 * sd + 1e-12).all()
    else:  # SPL's GRR at ε/2 = 15 debiases q·k ≈ 1.5e-5 of noise
        np.testing.assert_allclose(est["estimate"], truth / len(x), atol=1e-4)


def test_encode_names_the_bad_column_and_row(tmp_path):
    cfg = _config(tmp_path, "c.json", "--protocol", "rsfd", "--attributes", "age:8,country:50",
                  "--epsilon", "1")
    (tmp_path / "bad.csv").write_text("age,country\n1,2\n3,50\n")
    with pytest.raises(ValueError, match=r"row 2: column 'country' holds 50, outside its "
                                         r"domain \[0, 50\)"):
        cli.main(["encode", "--config", str(cfg), "--input", str(tmp_path / "bad.csv"),
                  "--output", str(tmp_path / "r.avro")])
    (tmp_path / "missing.csv").write_text("age\n1\n")
    with pytest.raises(ValueError, match=r"lacks \['country'\]"):
        cli.main(["encode", "--config", str(cfg), "--input", str(tmp_path / "missing.csv"),
                  "--output", str(tmp_path / "r.avro")])
    (tmp_path / "empty.csv").write_text("age,country\n1,\n")
    with pytest.raises(ValueError, match="row 1: column 'country' is empty"):
        cli.main(["encode", "--config", str(cfg), "--input", str(tmp_path / "empty.csv"),
                  "--output", str(tmp_path / "r.avro")])


def test_audit_takes_tuples(tmp_path, capsys):
    """RS+FD (d = 3, k = (3, 2, 4), ε = 1): between tuples differing everywhere the audit's lower
    bound (95 % confidence, 4·10^5 samples) exceeds ε = 1 (exact: ε′ = 1.817) yet stays below
    ε′, the configured tuple-level ε; a bad tuple names the attribute."""
    out = tmp_path / "audit.json"
    assert cli.main(["audit", "--protocol", "rsfd", "--attributes", "a:3,b:2,c:4", "--epsilon",
                     "1", "--x0", "0,0,0", "--x1", "2,1,3", "--samples", "400000", "--seed", "1",
                     "--output", str(out)]) is not None
    r = json.loads(out.read_text())
    assert r["x0"] == [0, 0, 0] and r["x1"] == [2, 1, 3]
    assert r["epsilon"] == pytest.approx(np.log(3 * np.expm1(1) + 1))
    assert 1.0 < r["epsilon_lower_bound"] <= r["epsilon"]
    with pytest.raises(ValueError, match=r"x1\[b\] must be in \[0, 1\]"):
        cli.main(["audit", "--protocol", "rsfd", "--attributes", "a:3,b:2,c:4", "--epsilon",
                  "1", "--x1", "0,2,0"])
    with pytest.raises(ValueError, match="tuple of 3 values"):
        cli.main(["audit", "--protocol", "rsfd", "--attributes", "a:3,b:2,c:4", "--epsilon",
                  "1", "--x1", "0,1"])


def test_plan_compares_multi_attribute_protocols(capsys):
    """plan --attributes: every protocol with its per-attribute MSE and tuple-level ε; RS+FD at ε
    (tuple ε′ > ε) and recalibrated to tuple ε = ε; ALLOMFREE with --epsilon-perm."""
    assert cli.main(["plan", "--attributes", "age:6,country:30", "--epsilon", "2", "--n",
                     "10000", "--epsilon-perm", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [(r["protocol"], r["params"].get("fake")) for r in rows]
    assert sorted(set(names)) == sorted({("spl", None), ("smp", None), ("allomfree", None),
                                         ("rsfd", "grr"), ("rsfd", "oue-z"), ("rsfd", "oue-r")})
    totals = [r["total_mse"] for r in rows]
    assert totals == sorted(totals)
    rsfd = [r for r in rows if r["protocol"] == "rsfd" and r["params"]["fake"] == "grr"]
    assert sorted(r["tuple_epsilon"] for r in rsfd) == pytest.approx(
        [2.0, np.log(2 * np.expm1(2) + 1)])
    spl = next(r for r in rows if r["protocol"] == "spl")
    smp = next(r for r in rows if r["protocol"] == "smp")
    assert spl["tuple_epsilon"] == smp["tuple_epsilon"] == 2.0
    assert smp["total_mse"] < spl["total_mse"]          # SPEC §8: SPL is always the worst
    with pytest.raises(ValueError, match="not both"):
        cli.main(["plan", "--k", "8", "--attributes", "a:8", "--epsilon", "1"])


@pytest.mark.parametrize("fmt", ["avro", "parquet"])
def test_smp_reports_carry_their_attribute(tmp_path, fmt):
    """SMP with an MSS inner: encode writes (attribute, inner block); aggregate maps them back.
    Within 5 analytic sd of the truth per item (58 items: false failure 3e-5)."""
    cfg = _config(tmp_path, "c.json", "--protocol", "smp", "--attributes", "age:8,country:50",
                  "--epsilon", "4", "--inner", "grr,mss")
    x = _people(tmp_path / "people.csv", n=20000)
    reports = tmp_path / f"r.{fmt}"
    assert cli.main(["encode", "--config", str(cfg), "--input", str(tmp_path / "people.csv"),
                     "--output", str(reports), "--seed", "1"]) == 0
    if fmt == "parquet":
        t = pq.read_table(reports)
        assert set(t.column("attribute").to_pylist()) == {0, 1}
        ell = len(CollectionConfig.load(cfg).protocol.inner_protocols[1].moduli)
        assert max(t.column("block").to_pylist()) == ell - 1   # MSS's blocks, inside attr 1
    out = tmp_path / "agg"
    assert cli.main(["aggregate", "--config", str(cfg), "--input", str(reports), "--output",
                     str(out), RUNNER]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_accepted"] == len(x) and s["config"]["schema_version"] == 2
    proto = CollectionConfig.load(cfg).protocol
    f = np.concatenate([np.bincount(x[:, 0], minlength=8), np.bincount(x[:, 1], minlength=50)])
    f = f / len(x)
    est = np.array(pq.read_table(out / "estimates.parquet").column("estimate").to_pylist())
    assert (np.abs(est - f) <= 5 * np.sqrt(proto.variance(len(x), f))).all()


def test_allomfree_encode_with_state_keeps_the_attribute(tmp_path):
    """ALLOMFREE through encode --state: a user's attribute and permanent response persist over
    rounds (the second round's reports name the same attribute per user)."""
    cfg = _config(tmp_path, "c.json", "--protocol", "allomfree", "--attributes", "age:8,country:50",
                  "--epsilon", "1", "--epsilon-perm", "3")
    _people(tmp_path / "day.parquet", n=3000)
    attrs = []
    for r in (0, 1):
        out = tmp_path / f"day{r}.parquet"
        assert cli.main(["encode", "--config", str(cfg), "--input", str(tmp_path / "day.parquet"),
                         "--state", str(tmp_path / "users.sqlite"), "--round", str(r),
                         "--output", str(out), "--seed", str(r)]) == 0
        attrs.append(pq.read_table(out).column("attribute").to_numpy())
    np.testing.assert_array_equal(np.sort(attrs[0]), np.sort(attrs[1]))
    agg = tmp_path / "agg"
    assert cli.main(["aggregate", "--config", str(cfg), "--input", str(tmp_path / "day*.parquet"),
                     "--output", str(agg), RUNNER]) == 0
    s = json.loads((agg / "summary.json").read_text())
    assert s["n_accepted"] == 6000 and [r["round"] for r in s["rounds"]] == [0, 1]


def test_simulate_allomfree_rounds_per_attribute(tmp_path):
    """ALLOMFREE over 3 rounds: per round and attribute the MSE and its formula (split term in);
    pooled over rounds and attributes the ratio has sd < 0.2 (~100 item-rounds), band [0.5, 1.6]."""
    out = tmp_path / "sim"
    assert cli.main(["simulate", "--protocol", "allomfree", "--attributes", "age:8,app:30",
                     "--epsilon", "1", "--epsilon-perm", "3", "--n", "20000", "--rounds", "3",
                     "--change-rate", "0.2", "--seed", "5", "--output", str(out), RUNNER]) == 0
    s = json.loads((out / "summary.json").read_text())
    entries = [a for r in s["rounds"] for a in r["attributes"]]
    assert [a["attribute"] for a in s["rounds"][0]["attributes"]] == ["age", "app"]
    ratio = sum(a["mse"] for a in entries) / sum(a["predicted_mse"] for a in entries)
    assert 0.5 < ratio < 1.6
    t = pq.read_table(out / "rounds.parquet")
    assert t.column_names[:3] == ["round", "attribute", "item"] and t.num_rows == 3 * 38
