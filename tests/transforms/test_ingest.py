"""Report ingestion: Parquet round trip, hostile Parquet, vectorized Avro writing/reading, and
split reading (N ranges give exactly the records and dead letters of one whole read)."""
import io
import json
import os

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from _tf_helpers import GRR_EXACT, MSS_EXACT, MSS_INDICES, avro_bytes, records_for
from privfreq.pipelines import aggregate, encode
from privfreq.protocols.config import CollectionConfig
from privfreq import schemas
from privfreq.schemas.avro import read_avro_range, write_avro_reports
from privfreq.schemas.parquet import write_parquet_reports
from privfreq.transforms.io import ReadReportFiles, split_ranges
from privfreq.schemas.parquet import read_parquet_range
from privfreq.transforms.parse import STATS, ParseReports, merge_stats, parse_columns

OLH = CollectionConfig("olh", {"k": 20, "epsilon": 1.0})  # seeds of 1..10-byte varints


def _pieces(config, n, seed=3):
    items = np.arange(n) % config.protocol.k
    return list(encode.report_pieces(config, items, np.random.default_rng(seed)))


def _write_avro(fo, config, pieces, **kw):
    return write_avro_reports(fo, config.fingerprint, config.protocol.protocol_id, pieces, **kw)


def _write_parquet(path, config, pieces, **kw):
    return write_parquet_reports(path, config.fingerprint, config.protocol.protocol_id, pieces,
                                 **kw)


def _records(config, pieces) -> list[dict]:
    """report.avsc records of ``pieces``, one by one (the reference for the vectorized writers)."""
    return [{"config_fingerprint": config.fingerprint, "protocol": config.protocol.protocol_id,
             "block": j, "seed": int(s), "payload": payload[i].tobytes()}
            for j, seeds, payload in pieces for i, s in enumerate(seeds.tolist())]


def _avro_file(config, n, block_bytes=2000, codec="null", seed=3) -> bytes:
    buf = io.BytesIO()
    _write_avro(buf, config, _pieces(config, n, seed), codec=codec, block_bytes=block_bytes)
    return buf.getvalue()


def _rows(batches):
    """Everything a reader yields, in order: (location, record) per row, then unreadables."""
    rows, bad = [], []
    for b in batches:
        rows += [(b.locate(i), b.record(i), b.malformed.get(i)) for i in range(len(b))]
        if b.unreadable is not None:
            u = b.unreadable
            bad.append((u.offset, u.raw, u.message))
    return rows, bad


def _read_avro_split(data: bytes, cuts, batch_rows=50):
    bounds = [0] + sorted(cuts) + [len(data)]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        out += list(read_avro_range(io.BytesIO(data), "f.avro", batch_rows, a, b))
    return _rows(out)


# ----- writing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [MSS_INDICES, GRR_EXACT, OLH])
@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_vectorized_avro_writer_is_plain_avro_with_report_records_order(config, codec):
    items = np.arange(500) % config.protocol.k
    pieces = list(encode.report_pieces(config, items, np.random.default_rng(5)))
    expected = _records(config, pieces)
    buf = io.BytesIO()
    _write_avro(buf, config, pieces, codec=codec, block_bytes=1000)
    assert list(fastavro.reader(io.BytesIO(buf.getvalue()))) == expected
    got, bad = _rows(read_avro_range(io.BytesIO(buf.getvalue()), "f", 64))
    assert [r for _, r, _ in got] == expected and not bad


def test_encode_cli_format_by_flag_and_extension(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(MSS_EXACT.to_json())
    items = tmp_path / "items.csv"
    items.write_text("item\n" + "\n".join(str(i % 30) for i in range(300)))
    for out, extra in (("r.parquet", []), ("r2.bin", ["--format", "parquet"]), ("r.avro", [])):
        encode.run(["--config", str(cfg), "--input", str(items), "--output",
                    str(tmp_path / out), "--seed", "1"] + extra)
    assert pq.read_schema(tmp_path / "r.parquet").names == list(schemas.REPORT_PARQUET_SCHEMA.names)
    t = pq.read_table(tmp_path / "r2.bin")
    with open(tmp_path / "r.avro", "rb") as f:
        avro = list(fastavro.reader(f))
    assert t.to_pylist() == avro  # same seed: the same reports in both formats
    with pytest.raises(SystemExit):
        encode.run(["--config", str(cfg), "--input", str(items), "--output", "x", "--format", "csv"])


# ----- Parquet round trip and hostile Parquet ---------------------------------------------------

def test_parquet_and_avro_inputs_give_identical_estimates(tmp_path, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(MSS_EXACT.to_json())
    items = np.random.default_rng(0).integers(0, 30, 3000)
    outs = {}
    for fmt in ("avro", "parquet"):
        encode.encode_items(MSS_EXACT, items, str(tmp_path / f"in-{fmt}" / f"r.{fmt}"), seed=9)
        out = tmp_path / f"out-{fmt}"
        monkeypatch.chdir(tmp_path / f"in-{fmt}")  # a bare relative glob, as users type it
        aggregate.run(["--config", str(cfg), "--input", f"*.{fmt}", "--output", str(out)])
        outs[fmt] = (pq.read_table(out / "estimates.parquet").to_pydict(),
                     json.loads((out / "summary.json").read_text()))
    (est_a, sum_a), (est_p, sum_p) = outs["avro"], outs["parquet"]
    assert est_a == est_p
    assert sum_a["n_read"] == sum_p["n_read"] == sum_p["n_accepted"] == 3000
    assert abs(sum(est_p["estimate"]) - 1.0) < 0.01


def _table(n=20, **override):
    recs = records_for(GRR_EXACT, np.arange(n) % 8)
    cols = {name: [r[name] for r in recs] for name in recs[0]}
    cols.update(override)
    return pa.table(cols)


def _parse_parquet(data: bytes, config=GRR_EXACT, batch_rows=7):
    batches = list(read_parquet_range(io.BytesIO(data), "h.parquet", batch_rows))
    read = acc = 0
    dead = []
    for cols in batches:
        ok, d, stats = parse_columns(cols, config)
        assert stats["accepted"] + sum(stats["rejected"].values()) == stats["read"] == cols.n_read
        read += stats["read"]
        acc += stats["accepted"]
        dead += d
    return read, acc, dead


def _pq_bytes(table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def test_plain_parquet_without_dictionaries_is_accepted():
    read, acc, dead = _parse_parquet(_pq_bytes(_table(), use_dictionary=False))
    assert read == acc == 20 and not dead


@pytest.mark.parametrize("override, why", [
    ({"block": [str(i) for i in range(20)]}, "column 'block' has type string"),
    ({"seed": [0.5] * 20}, "column 'seed' has type double"),
    ({"payload": ["ab"] * 20}, "column 'payload' has type string"),
    ({"protocol": [1] * 20}, "column 'protocol' has type int64"),
])
def test_wrongly_typed_column_makes_every_row_a_dead_letter(override, why):
    read, acc, dead = _parse_parquet(_pq_bytes(_table(**override)))
    assert (read, acc, len(dead)) == (20, 0, 20)
    assert all(d["reason"] == "MALFORMED_RECORD" and why in d["message"] for d in dead)
    assert sorted(d["source"] for d in dead) == sorted(f"h.parquet#{i}" for i in range(20))


def test_missing_column_makes_every_row_a_dead_letter():
    read, acc, dead = _parse_parquet(_pq_bytes(_table().drop_columns(["payload"])))
    assert (read, acc, len(dead)) == (20, 0, 20)
    assert "column 'payload' is missing" in dead[0]["message"]
    assert b"'block'" in dead[0]["raw"]  # the row's other fields, for a human


def test_nulls_and_beyond_int64_values_reject_only_their_rows():
    t = _table()
    seed = pa.array([None, 2**63 + 5] + [0] * 18, pa.uint64())
    payload = t.column("payload").to_pylist()
    payload[5] = None
    fp = t.column("config_fingerprint").to_pylist()
    fp[7] = None
    t = t.set_column(3, "seed", seed).set_column(4, "payload", pa.array(payload, pa.binary()))
    t = t.set_column(0, "config_fingerprint", pa.array(fp, pa.string()))
    read, acc, dead = _parse_parquet(_pq_bytes(t))
    assert (read, acc) == (20, 16)
    by_row = {d["source"]: d["message"] for d in dead}
    assert by_row == {"h.parquet#0": "field 'seed' is null",
                      "h.parquet#1": "field 'seed' is beyond int64",
                      "h.parquet#5": "field 'payload' is null",
                      "h.parquet#7": "field 'config_fingerprint' is null"}


def test_truncated_and_garbage_parquet_are_one_dead_letter_each():
    data = _pq_bytes(_table())
    for bad in (data[:len(data) // 2], b"PAR1" + b"\x00" * 50, b""):
        read, acc, dead = _parse_parquet(bad)
        assert (read, acc, len(dead)) == (1, 0, 1)
        assert dead[0]["reason"] == "UNREADABLE_FILE" and "footer" in dead[0]["message"]


def test_corrupt_row_group_counts_its_declared_rows_and_the_others_are_read():
    t = _table(40)
    data = bytearray(_pq_bytes(t, row_group_size=10, compression="none", use_dictionary=False))
    md = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    col = md.row_group(1).column(4)  # payload chunk of row group 1: smash its page header
    start = col.data_page_offset
    data[start:start + 8] = b"\xff" * 8
    read, acc, dead = _parse_parquet(bytes(data))
    assert acc == 30 and read == 40  # the row group's 10 declared rows are counted as lost
    assert [d["reason"] for d in dead] == ["CORRUPT_RECORDS"]
    assert "row group 1 (declares 10 rows, 0 decoded" in dead[0]["message"]


# ----- split reading ------------------------------------------------------------------------------

def test_avro_split_anywhere_gives_the_whole_read():
    data = _avro_file(MSS_INDICES, 600, block_bytes=700)
    whole = _read_avro_split(data, [])
    assert len(whole[0]) == 600 and not whole[1]
    rng = np.random.default_rng(0)
    for n_cuts in (1, 2, 5, 17):
        cuts = rng.choice(np.arange(1, len(data)), n_cuts, replace=False).tolist()
        assert _read_avro_split(data, cuts) == whole, cuts
    head = data.index(fastavro.reader(io.BytesIO(data))._header["sync"])
    for cut in (1, head - 1, head, head + 1, head + 16, head + 17):  # around the header's marker
        assert _read_avro_split(data, [cut]) == whole, cut


def test_avro_written_by_fastavro_with_mixed_records_splits_and_matches_fastavro():
    recs = records_for(OLH, np.arange(300) % 20) + records_for(GRR_EXACT, np.arange(300) % 8)
    recs[10]["config_fingerprint"] = "other"
    data = avro_bytes(recs, sync_interval=500)
    whole = _read_avro_split(data, [])
    assert [r for _, r, _ in whole[0]] == list(fastavro.reader(io.BytesIO(data)))
    rng = np.random.default_rng(1)
    for _ in range(5):
        cuts = rng.choice(np.arange(1, len(data)), 4, replace=False).tolist()
        assert _read_avro_split(data, cuts) == whole


def test_avro_corrupt_middle_and_tail_stay_exact_under_splits():
    data = bytearray(_avro_file(GRR_EXACT, 2000, block_bytes=3000))
    n_blocks = sum(1 for _ in fastavro.block_reader(io.BytesIO(bytes(data))))
    assert n_blocks >= 8
    mid = len(data) // 2
    data[mid:mid + 40] = b"\xee" * 40          # one block in the middle is smashed
    data = bytes(data[:len(data) - 1500])      # and the file is truncated inside a block
    whole_rows, whole_bad = _read_avro_split(data, [])
    assert len(whole_bad) == 2                 # the smashed block and the truncated tail
    assert whole_bad[1][1] == data[whole_bad[1][0]:]  # the tail: everything up to the end
    assert 1500 < len(whole_rows) < 2000
    got = [r for _, r, _ in whole_rows]
    assert len(set(map(str, whole_rows))) == len(whole_rows)  # no record twice
    rng = np.random.default_rng(2)
    for n_cuts in (1, 3, 8, 30):
        cuts = rng.choice(np.arange(1, len(data)), n_cuts, replace=False).tolist()
        assert _read_avro_split(data, cuts) == (whole_rows, whole_bad), cuts
    assert got == [r for _, r, _ in whole_rows]


def test_parquet_row_group_ranges_give_the_whole_read(tmp_path):
    path = str(tmp_path / "r.parquet")
    _write_parquet(path, MSS_INDICES, _pieces(MSS_INDICES, 700),
                                 row_group_bytes=900)
    with open(path, "rb") as f:
        whole = _rows(read_parquet_range(f, path, 64))
        n_groups = pq.ParquetFile(f).metadata.num_row_groups
        ranges = split_ranges(f, path, os.path.getsize(path), split_rows=1)
    assert n_groups >= 5 and len(ranges) == n_groups and len(whole[0]) == 700
    parts = []
    for _, fmt, a, b in ranges:
        assert fmt == "parquet"
        with open(path, "rb") as f:
            parts += list(read_parquet_range(f, path, 64, a, b))
    assert _rows(parts) == whole


def test_pipeline_reads_split_files_like_whole_ones(tmp_path):
    """ReadReportFiles with tiny splits (many ranges per file, reshuffled) = one range per file."""
    good = _avro_file(GRR_EXACT, 3000, block_bytes=2000)
    out_dir = tmp_path / "out"
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    (tmp_path / "a.avro").write_bytes(good[:len(good) - 700])  # corrupt tail
    _write_parquet(str(tmp_path / "b.parquet"), GRR_EXACT,
                                 _pieces(GRR_EXACT, 1000), row_group_bytes=3000)
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
    pattern = str(tmp_path / "*")
    for label, split_bytes, split_rows in (("whole", 1 << 30, 1 << 30), ("split", 1500, 1)):
        with test_pipeline.TestPipeline(options=PipelineOptions(["--runner=FnApiRunner"]),
                                        blocking=True) as p:
            parsed = (p | ReadReportFiles(pattern, 256, split_bytes, split_rows)
                      | beam.ParDo(ParseReports(GRR_EXACT)).with_outputs(STATS, "invalid",
                                                                         main="valid"))
            stats = parsed[STATS] | beam.CombineGlobally(merge_stats)
            assert_that(stats | beam.Map(lambda s: (s["read"] == s["accepted"]
                                                    + sum(s["rejected"].values()))),
                        equal_to([True]), label=f"Balanced{label}")
            (stats | beam.Map(json.dumps, sort_keys=True)
             | beam.io.WriteToText(str(out_dir / f"stats-{label}"), shard_name_template=""))
    whole = json.loads((out_dir / "stats-whole").read_text())
    split = json.loads((out_dir / "stats-split").read_text())
    assert whole == split
    assert whole["regions"] == {"TRUNCATED_RECORDS": 1, "UNREADABLE_FILE": 1}
    assert whole["rejected"]["UNREADABLE_FILE"] == 1 and whole["rejected"]["TRUNCATED_RECORDS"] > 0
    assert 3000 < whole["read"] <= 4001
