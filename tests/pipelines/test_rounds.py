"""Per-round estimates in ``aggregate``: reports of ``encode --state --round`` in several files,
a version-1 file without rounds, and a round outside ``--rounds`` (dead letter); per-round
estimates against the truth, ``accepted + rejected = read``."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from privfreq.pipelines import cli
from privfreq.protocols.config import CollectionConfig

CONFIG = CollectionConfig("loloha", {"k": 16, "epsilon_perm": 4.0, "epsilon": 2.0})


def test_aggregate_estimates_each_round(tmp_path):
    (tmp_path / "c.json").write_text(CONFIG.to_json())
    rng = np.random.default_rng(4)
    n, k = 4000, 16
    items = rng.integers(0, k, n)
    truth = {}
    for r in range(4):  # rounds 0..3; round 3 falls outside --rounds 0:2
        move = rng.random(n) < 0.3
        items = np.where(move, rng.integers(0, k, n), items)
        truth[r] = np.bincount(items, minlength=k) / n
        pq.write_table(pa.table({"user_id": np.arange(n), "item": items}),
                       tmp_path / f"d{r}.parquet")
        fmt = "parquet" if r == 1 else "avro"  # rounds in both formats
        assert cli.main(["encode", "--config", str(tmp_path / "c.json"), "--input",
                         str(tmp_path / f"d{r}.parquet"), "--round", str(r), "--state",
                         str(tmp_path / "u.sqlite"), "--output",
                         str(tmp_path / f"reports-{r}.{fmt}"), "--seed", str(r)]) == 0
    # a version-1 file (no round field): counted in the pooled estimate only
    pq.write_table(pa.table({"item": items[:500]}), tmp_path / "plain.parquet")
    assert cli.main(["encode", "--config", str(tmp_path / "c.json"), "--input",
                     str(tmp_path / "plain.parquet"), "--output",
                     str(tmp_path / "reports-v1.avro"), "--seed", "9"]) == 0
    out = tmp_path / "agg"
    assert cli.main(["aggregate", "--config", str(tmp_path / "c.json"), "--input",
                     str(tmp_path / "reports-*"), "--output", str(out),
                     "--rounds", "0:2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_read"] == 4 * n + 500
    assert s["rejected_by_reason"] == {"ROUND_OUT_OF_RANGE": n}
    assert s["n_accepted"] + s["n_rejected"] == s["n_read"] and s["n_accepted"] == 3 * n + 500
    assert [e["round"] for e in s["rounds"]] == [0, 1, 2]
    assert [e["n"] for e in s["rounds"]] == [n, n, n]
    assert (out / "rounds.png").stat().st_size > 1000
    t = pq.read_table(out / "estimates.parquet")
    assert t.schema.field("round").nullable and t.num_rows == 4 * k
    rnd = t.column("round")
    assert rnd.null_count == k  # the pooled rows
    df = t.to_pydict()
    for r in range(3):
        rows = [i for i, x in enumerate(df["round"]) if x == r]
        est = np.array(df["estimate"])[rows]
        se = np.array(df["stderr"])[rows]
        # 5 stderr per item (Gaussian tail 6e-7; 48 items: false failure < 3e-5)
        assert np.all(np.abs(est - truth[r]) <= 5 * se), r


def test_parse_rejects_negative_and_out_of_range_rounds():
    from privfreq.schemas.columns import NO_ROUND
    from privfreq.transforms.parse import parse_columns, round_batches
    from privfreq.schemas.columns import ReportColumns

    config = CollectionConfig("grr", {"k": 4, "epsilon": 1.0})
    recs = [{"config_fingerprint": config.fingerprint, "protocol": "grr", "block": 0, "seed": 0,
             "payload": bytes([i % 4]), "round": r} for i, r in enumerate([0, 1, -1, 5, None, 1])]
    cols = ReportColumns.from_records(recs)
    assert cols.round.tolist() == [0, 1, -1, 5, NO_ROUND, 1]
    batches, dead, stats, rounds = parse_columns(cols, config, (0, 2), with_rounds=True)
    assert stats["rejected"] == {"ROUND_OUT_OF_RANGE": 2} and stats["accepted"] == 4
    assert {d["reason"] for d in dead} == {"ROUND_OUT_OF_RANGE"}
    (b,), (rnd,) = batches, rounds
    per = dict((r, len(x)) for r, x in round_batches(b, rnd))
    assert per == {0: 1, 1: 2}  # the row without a round is pooled only
