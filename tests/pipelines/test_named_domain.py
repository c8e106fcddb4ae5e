"""Items with names end to end: a names file through config, encode, aggregate and simulate to
estimates, summaries and a figure labelled by name, with every kind of protocol."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.domain import OTHER

RUNNER = "--runner=FnApiRunner"
FRUITS = ["apple", "banana", "cherry", "date", "elderberry", "fig", "grape", "çava 🍌"]


def _files(tmp_path, n=6000, seed=0):
    (tmp_path / "names.txt").write_text("\n".join(FRUITS) + "\n", encoding="utf-8")
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, len(FRUITS) + 2)
    eaten = rng.choice(FRUITS + ["kiwi"], n, p=w / w.sum())
    (tmp_path / "eaten.txt").write_text("\n".join(eaten) + "\n", encoding="utf-8")
    return eaten


def _config(tmp_path, *args):
    path = tmp_path / "c.json"
    assert cli.main(["config", "--domain", str(tmp_path / "names.txt"), *args,
                     "--output", str(path)]) == 0
    return path


@pytest.mark.parametrize("protocol, eps", [("grr", 3.0), ("oue", 3.0), ("olh", 3.0),
                                           ("ss", 3.0), ("hr", 3.0), ("mss", 3.0)])
def test_names_through_encode_and_aggregate(tmp_path, protocol, eps):
    """Every estimate within 5 analytic standard deviations of the input's frequencies (9 items:
    false failure 5e-6); estimates.parquet, the summary and the figure carry the names."""
    eaten = _files(tmp_path)
    cfg = _config(tmp_path, "--protocol", protocol, "--epsilon", str(eps), "--unknown", "other")
    config = CollectionConfig.load(cfg)
    assert config.protocol.k == len(FRUITS) + 1
    assert config.domain["names"] == len(FRUITS) and config.domain["other"] is True
    reports = tmp_path / "r.avro"
    assert cli.main(["encode", "--config", str(cfg), "--domain", str(tmp_path / "names.txt"),
                     "--unknown", "other", "--input", str(tmp_path / "eaten.txt"),
                     "--output", str(reports), "--seed", "1"]) == 0
    out = tmp_path / "agg"
    assert cli.main(["aggregate", "--config", str(cfg), "--domain", str(tmp_path / "names.txt"),
                     "--input", str(reports), "--output", str(out), RUNNER]) == 0
    t = pq.read_table(out / "estimates.parquet")
    assert t.column_names == ["item", "name", "estimate", "stderr"]
    assert t.column("name").to_pylist() == FRUITS + [OTHER]
    labels = FRUITS + [OTHER]
    truth = np.array([np.mean(np.where(np.isin(eaten, FRUITS), eaten, OTHER) == x)
                      for x in labels])
    sd = np.sqrt(config.protocol.variance(len(eaten), truth))
    assert (np.abs(np.array(t.column("estimate").to_pylist()) - truth) <= 5 * sd).all()
    s = json.loads((out / "summary.json").read_text())
    assert {r["name"] for r in s["top_items"]} <= set(labels)
    assert s["top_items"][0]["name"] == "apple"
    assert (out / "estimates.png").stat().st_size > 1000


def test_names_from_csv_and_parquet_columns(tmp_path):
    eaten = _files(tmp_path, n=500)
    cfg = _config(tmp_path, "--protocol", "grr", "--epsilon", "30", "--unknown", "other")
    known = np.where(np.isin(eaten, FRUITS), eaten, "kiwi")
    pq.write_table(pa.table({"user": np.arange(500), "item": known}), tmp_path / "e.parquet")
    (tmp_path / "e.csv").write_text("item\n" + "\n".join(known) + "\n", encoding="utf-8")
    counts = []
    for name in ("e.parquet", "e.csv"):
        reports = tmp_path / f"{name}.avro"
        assert cli.main(["encode", "--config", str(cfg), "--domain", str(tmp_path / "names.txt"),
                         "--unknown", "other", "--input", str(tmp_path / name),
                         "--output", str(reports), "--seed", "2"]) == 0
        out = tmp_path / f"agg-{name}"
        assert cli.main(["aggregate", "--config", str(cfg), "--input", str(reports),
                         "--output", str(out), RUNNER]) == 0   # no --domain: ids only
        t = pq.read_table(out / "estimates.parquet")
        assert "name" not in t.column_names
        counts.append(np.round(np.array(t.column("estimate").to_pylist()) * 500))
    expected = [np.sum(known == x) for x in FRUITS] + [np.sum(known == "kiwi")]
    np.testing.assert_array_equal(counts[0], expected)   # GRR at ε = 30: no noise
    np.testing.assert_array_equal(counts[1], expected)


def test_bad_names_and_dictionaries(tmp_path):
    _files(tmp_path, n=50)
    cfg = _config(tmp_path, "--protocol", "grr", "--epsilon", "1")
    names = str(tmp_path / "names.txt")

    def encode(*args):
        return cli.main(["encode", "--config", str(cfg), "--output", str(tmp_path / "r.avro"),
                         *args])

    with pytest.raises(ValueError, match="pass the same names file with --domain"):
        encode("--input", str(tmp_path / "eaten.txt"))
    with pytest.raises(ValueError, match="'kiwi' is not in the dictionary"):
        encode("--domain", names, "--input", str(tmp_path / "eaten.txt"))
    with pytest.raises(ValueError, match="needs a config made with --unknown other"):
        encode("--domain", names, "--unknown", "other", "--input", str(tmp_path / "eaten.txt"))
    (tmp_path / "other.txt").write_text("\n".join(FRUITS[::-1]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is not the config's"):
        encode("--domain", str(tmp_path / "other.txt"), "--input", str(tmp_path / "eaten.txt"))
    (tmp_path / "bad.txt").write_bytes(b"apple\nban\xffana\n")
    with pytest.raises(ValueError, match="line 2 is not valid UTF-8"):
        encode("--domain", names, "--input", str(tmp_path / "bad.txt"))
    (tmp_path / "nohead.csv").write_text("apple\nbanana\n")
    with pytest.raises(ValueError, match="a CSV of names needs a header with a column 'item'"):
        encode("--domain", names, "--input", str(tmp_path / "nohead.csv"))
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="duplicate name 'a' on lines 1 and 3"):
        cli.main(["config", "--protocol", "grr", "--epsilon", "1", "--domain",
                  str(tmp_path / "dup.txt"), "--output", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="differs from the 8 items"):
        cli.main(["config", "--protocol", "grr", "--epsilon", "1", "--domain", names, "--k", "9",
                  "--output", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="made without --domain"):
        plain = tmp_path / "plain.json"
        cli.main(["config", "--protocol", "grr", "--k", "8", "--epsilon", "1", "--output",
                  str(plain)])
        cli.main(["aggregate", "--config", str(plain), "--domain", names, "--input",
                  str(tmp_path / "r.avro"), "--output", str(tmp_path / "o")])


def test_simulate_labels_by_name(tmp_path):
    _files(tmp_path, n=10)
    out = tmp_path / "sim"
    assert cli.main(["simulate", "--protocol", "mss", "--domain", str(tmp_path / "names.txt"),
                     "--epsilon", "2", "--n", "5000", "--seed", "1", "--output", str(out),
                     RUNNER]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["truth_top_items"][0]["name"] == "apple"     # zipf: item 0 is the most frequent
    assert pq.read_table(out / "estimates.parquet").column("name").to_pylist() == FRUITS
