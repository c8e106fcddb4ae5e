"""privfreq query: candidate names against saved sketch totals (HCMS / CMS)."""
import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privfreq.pipelines import cli, query
from privfreq.protocols import CollectionConfig
from privfreq.protocols import totals as totals_lib
from privfreq.protocols.cms import CMS, HCMS
from privfreq.protocols.hashing import item_id

NAMES = ["apple", "banana", "cherry", "déjà vu"]
COUNTS = [20000, 10000, 5000, 0]


def _items(rng):
    others = [f"r{i}" for i in range(500)]
    ids = np.repeat(item_id(NAMES + others), COUNTS + [10] * 500)
    return rng.permutation(ids)


def _write(tmp_path, proto, acc):
    cfg = CollectionConfig.of(proto)
    cfg.save(tmp_path / "c.json")
    totals_lib.save(tmp_path / "t.npz", totals_lib.Totals(cfg, acc))
    (tmp_path / "cands.txt").write_text("\n".join(NAMES) + "\n", encoding="utf-8")


@pytest.mark.parametrize("cls", [HCMS, CMS])
def test_query_from_saved_totals(tmp_path, cls):
    """Each name within 5 of its standard errors (4 names x 2 protocols; false failure < 8·6e-7
    plus the hash seed's fixed collisions, which the stderr includes for the listed names)."""
    rng = np.random.default_rng(4)
    proto = cls(16, 3.0, hashes=64, buckets=256, hash_seed=5)
    items = _items(rng)
    acc = proto.add_reports(proto.create_accumulator(), proto.randomize(items, rng))
    _write(tmp_path, proto, acc)
    out = tmp_path / "est.csv"
    cli.main(["query", "--config", str(tmp_path / "c.json"), "--totals", str(tmp_path / "t.npz"),
              "--candidates", str(tmp_path / "cands.txt"), "--output", str(out)])
    with out.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == NAMES
    truth = np.array(COUNTS) / len(items)
    est = np.array([float(r["estimate"]) for r in rows])
    se = np.array([float(r["stderr"]) for r in rows])
    assert (np.abs(est - truth) < 5 * se).all(), (est, truth, se)
    assert int(rows[0]["item_id"]) == int(item_id(["apple"])[0])


def test_query_end_to_end_encode_aggregate(tmp_path):
    """Names -> ids -> encode -> Beam aggregate --totals-out -> query."""
    rng = np.random.default_rng(8)
    proto = HCMS(16, 3.0, hashes=64, buckets=256, hash_seed=5)
    cfg = CollectionConfig.of(proto)
    cfg.save(tmp_path / "c.json")
    items = _items(rng)
    pq.write_table(pa.table({"item": items}), tmp_path / "items.parquet")
    (tmp_path / "cands.txt").write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    cli.main(["encode", "--config", str(tmp_path / "c.json"), "--input",
              str(tmp_path / "items.parquet"), "--output", str(tmp_path / "r.avro"), "--seed", "3"])
    cli.main(["aggregate", "--config", str(tmp_path / "c.json"), "--input",
              str(tmp_path / "r.avro"), "--output", str(tmp_path / "agg"), "--totals-out",
              str(tmp_path / "t.npz")])
    rows = query.query(cfg, totals_lib.load(tmp_path / "t.npz"),
                       query.read_candidates(str(tmp_path / "cands.txt")))
    truth = np.array(COUNTS) / len(items)
    for r, f in zip(rows, truth):   # 5 σ (false failure < 4·6e-7)
        assert abs(r["estimate"] - f) < 5 * r["stderr"], r


def test_query_errors(tmp_path):
    proto = HCMS(16, 3.0, hashes=4, buckets=16)
    acc = proto.create_accumulator()
    _write(tmp_path, proto, acc)
    cands = tmp_path / "bad.txt"
    cands.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(ValueError, match="line 2 is not valid UTF-8"):
        query.read_candidates(str(cands))
    cands.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="duplicate name 'a'"):
        query.read_candidates(str(cands))
    cands.write_text("\n\n")
    with pytest.raises(ValueError, match="no names"):
        query.read_candidates(str(cands))
    other = CollectionConfig.of(HCMS(16, 3.0, hashes=4, buckets=16, hash_seed=1))
    with pytest.raises(ValueError, match="do not belong to config"):
        query.query(other, totals_lib.load(tmp_path / "t.npz"), ["a"])
    grr = CollectionConfig("grr", {"k": 4, "epsilon": 1.0})
    g = totals_lib.Totals(grr, grr.protocol.create_accumulator())
    with pytest.raises(ValueError, match="needs a sketch protocol"):
        query.query(grr, g, ["a"])
    with pytest.raises(ValueError, match="limit is 255"):
        query.query(CollectionConfig.of(proto), totals_lib.load(tmp_path / "t.npz"), ["x" * 300])
