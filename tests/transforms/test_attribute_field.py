"""The report's optional ``attribute`` field (schema version 2): a sampled multi-attribute report
(SMP, ALLOMFREE) names its attribute and carries the inner protocol's block within it. Written by
the Avro and Parquet writers (``wire_blocks``), read by the vectorized and the fastavro paths,
mapped to the protocol's flat blocks by ``parse_columns``; hostile attributes are dead letters."""
import io
import json

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _tf_helpers import GRR_EXACT, avro_bytes, records_for
from privfreq import schemas
from privfreq.pipelines.encode import batch_pieces
from privfreq.protocols.base import Reason
from privfreq.protocols.config import CollectionConfig
from privfreq.schemas import avro as avro_mod
from privfreq.schemas.avro import (decode_report_record, encode_report, read_avro_range,
                                   write_avro_reports)
from privfreq.schemas.columns import NO_ATTRIBUTE, NO_ROUND, ReportColumns
from privfreq.schemas.parquet import read_parquet_range, write_parquet_reports
from privfreq.transforms.parse import merge_stats, parse_columns

# Flat blocks 0 (a: GRR's one block), 1 and 2 (b: MSS's blocks of moduli 7 and 8).
SMP = CollectionConfig("smp", {"attributes": ["a", "b"], "domains": [5, 14], "epsilon": 1.0,
                               "inner": ["grr", {"protocol": "mss",
                                                 "params": {"moduli": [7, 8]}}]})
N = 3000


def _batch(n=N, seed=5):
    p = SMP.protocol
    rng = np.random.default_rng(seed)
    items = np.stack([rng.integers(0, 5, n), rng.integers(0, 14, n)], axis=1)
    return p.randomize(items, rng)


def _pieces(batch):
    return list(batch_pieces(SMP.protocol, batch))


def _avro(pieces, codec="null", block_bytes=4000, **kw) -> bytes:
    buf = io.BytesIO()
    p = SMP.protocol
    write_avro_reports(buf, SMP.fingerprint, p.protocol_id, pieces, codec=codec,
                       block_bytes=block_bytes, wire_blocks=p.wire_block, **kw)
    return buf.getvalue()


def _parse(batches, config=SMP, **kw):
    """(accepted ReportBatches, dead letters, merged stats) of every column batch."""
    acc, dead, stats = [], [], []
    for cols in batches:
        b, d, s = parse_columns(cols, config, **kw)
        acc += b
        dead += d
        stats.append(s)
    st = merge_stats(stats)
    assert st["accepted"] + sum(st["rejected"].values()) == st["read"]
    return acc, dead, st


def _counts(batches):
    p = SMP.protocol
    acc = p.create_accumulator()
    for b in batches:
        p.add_reports(acc, b)
    return acc


def _assert_same_reports(accepted, batch):
    """The accepted batches hold exactly ``batch``'s reports (flat blocks, seeds, values) and
    count the same."""
    got = sorted((int(b), int(s), v.tobytes()) for rb in accepted
                 for b, s, v in zip(rb.block, rb.seed, rb.values))
    want = sorted((int(b), int(s), v.tobytes())
                  for b, s, v in zip(batch.block, batch.seed, batch.values))
    assert got == want
    a, b = _counts(accepted), _counts([batch])
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.n_block, b.n_block)


@pytest.fixture
def decoded_by_fastavro(monkeypatch):
    """Counts the blocks that fastavro (not the vectorized layout runs) decodes."""
    calls = []
    real = avro_mod._decode_records

    def spy(data, count, header):
        calls.append(count)
        return real(data, count, header)

    monkeypatch.setattr(avro_mod, "_decode_records", spy)
    return calls


# ----- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["null", "deflate"])
@pytest.mark.parametrize("round_", [None, 3])
def test_avro_fast_path_round_trip(codec, round_, decoded_by_fastavro):
    batch = _batch()
    data = _avro(_pieces(batch), codec=codec, round_=round_)
    header = avro_mod._read_header(io.BytesIO(data))
    names = [f["name"] for f in header.writer_schema["fields"]]
    assert names == list(schemas.REPORT_V1_FIELDS) + (["round"] if round_ is not None else []) \
        + ["attribute"]
    cols = list(read_avro_range(io.BytesIO(data), "f.avro", 1000))
    assert decoded_by_fastavro == []  # every block decoded vectorized
    attr = np.concatenate([c.attribute for c in cols])
    block = np.concatenate([c.block for c in cols])
    want_attr, want_block = SMP.protocol.wire_block(np.sort(batch.block))
    # pieces are written in flat-block order: attribute and inner block as wire_block gives them
    np.testing.assert_array_equal(attr, want_attr)
    np.testing.assert_array_equal(block, want_block)
    assert set(block[attr == 0].tolist()) == {0} and set(block[attr == 1].tolist()) == {0, 1}
    if round_ is not None:
        assert all((c.round == round_).all() for c in cols)
    # any Avro reader reads the same records
    recs = list(fastavro.reader(io.BytesIO(data)))
    assert [r["attribute"] for r in recs] == attr.tolist()
    assert [r["block"] for r in recs] == block.tolist()
    accepted, dead, st = _parse(cols)
    assert dead == [] and st["accepted"] == N
    _assert_same_reports(accepted, batch)


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_avro_fastavro_path_round_trip(codec, decoded_by_fastavro):
    # A gateway writing every report.avsc field (event_time included) one record at a time: not a
    # vectorized layout, so fastavro decodes it; the records are the same.
    batch = _batch()
    p = SMP.protocol
    attr, inner = p.wire_block(batch.block)
    recs = []
    for i in range(len(batch)):
        j = int(batch.block[i])
        recs.append({"config_fingerprint": SMP.fingerprint, "protocol": p.protocol_id,
                     "block": int(inner[i]), "seed": int(batch.seed[i]),
                     "payload": p.encode_payloads(j, batch.values[i:i + 1]).tobytes(),
                     "event_time": None, "round": None, "attribute": int(attr[i])})
    buf = io.BytesIO()
    fastavro.writer(buf, schemas.report_schema(optional_fields=True), recs, codec=codec,
                    sync_interval=2000)
    cols = list(read_avro_range(io.BytesIO(buf.getvalue()), "f.avro", 700))
    assert sum(decoded_by_fastavro) == N
    np.testing.assert_array_equal(np.concatenate([c.attribute for c in cols]), attr)
    accepted, dead, st = _parse(cols)
    assert dead == [] and st["accepted"] == N
    _assert_same_reports(accepted, batch)


@pytest.mark.parametrize("round_", [None, 7])
def test_parquet_round_trip(tmp_path, round_):
    batch = _batch()
    p = SMP.protocol
    path = str(tmp_path / "r.parquet")
    assert write_parquet_reports(path, SMP.fingerprint, p.protocol_id, _pieces(batch),
                                 row_group_bytes=5000, round_=round_,
                                 wire_blocks=p.wire_block) == N
    schema = pq.read_schema(path)
    assert schema.names[-1] == "attribute" and schema.field("attribute").type == pa.int32()
    assert ("round" in schema.names) == (round_ is not None)
    with open(path, "rb") as fo:
        cols = list(read_parquet_range(fo, path, 800))
    assert pq.ParquetFile(path).metadata.num_row_groups > 1
    attr = np.concatenate([c.attribute for c in cols])
    want_attr, want_block = p.wire_block(np.sort(batch.block))
    np.testing.assert_array_equal(attr, want_attr)
    np.testing.assert_array_equal(np.concatenate([c.block for c in cols]), want_block)
    accepted, dead, st = _parse(cols)
    assert dead == [] and st["accepted"] == N
    _assert_same_reports(accepted, batch)


@pytest.mark.parametrize("union", [["int", "null"], ["null", "long"], ["long", "null"]])
def test_vectorized_layout_takes_either_union_order_and_integer_type(union, decoded_by_fastavro):
    raw = schemas.load_json(schemas.REPORT)
    fields = [f for f in raw["fields"] if f["name"] in schemas.REPORT_V1_FIELDS + ("round",
                                                                                  "attribute")]
    for f in fields[-2:]:
        f["type"] = list(union)
        f.pop("default")  # a default must match the first branch; a writer schema needs none
    raw["fields"] = fields
    batch = _batch(400)
    batch = batch.take(np.argsort(batch.block, kind="stable"))  # runs of one attribute
    p = SMP.protocol
    attr, inner = p.wire_block(batch.block)
    recs = [{"config_fingerprint": SMP.fingerprint, "protocol": p.protocol_id,
             "block": int(inner[i]), "seed": int(batch.seed[i]),
             "payload": p.encode_payloads(int(batch.block[i]), batch.values[i:i + 1]).tobytes(),
             "round": None if i < 200 else 4, "attribute": int(attr[i])}
            for i in range(len(batch))]
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(raw), recs)
    cols = list(read_avro_range(io.BytesIO(buf.getvalue()), "f.avro", 10_000))
    assert decoded_by_fastavro == []
    (c,) = cols
    np.testing.assert_array_equal(c.attribute, attr)
    np.testing.assert_array_equal(c.round, np.where(np.arange(400) < 200, NO_ROUND, 4))
    accepted, dead, st = _parse(cols)
    assert dead == [] and st["accepted"] == 400
    _assert_same_reports(accepted, batch)


# ----- old files ---------------------------------------------------------------------------------

def test_version_1_files_still_read(tmp_path, decoded_by_fastavro):
    config = GRR_EXACT
    items = np.arange(300) % 8
    pieces = list(batch_pieces(config.protocol, config.protocol.randomize(
        items, np.random.default_rng(1))))
    buf = io.BytesIO()
    write_avro_reports(buf, config.fingerprint, "grr", pieces)
    header = avro_mod._read_header(io.BytesIO(buf.getvalue()))
    assert [f["name"] for f in header.writer_schema["fields"]] == list(schemas.REPORT_V1_FIELDS)
    fast = list(read_avro_range(io.BytesIO(buf.getvalue()), "f", 1000))
    assert decoded_by_fastavro == []
    data = avro_bytes(records_for(config, items), sync_interval=200)
    slow = list(read_avro_range(io.BytesIO(data), "g", 1000))
    path = str(tmp_path / "v1.parquet")
    write_parquet_reports(path, config.fingerprint, "grr", pieces)
    assert "attribute" not in pq.read_schema(path).names
    with open(path, "rb") as fo:
        parq = list(read_parquet_range(fo, path, 1000))
    for cols in (fast, slow, parq):
        assert all(c.attribute is None for c in cols)
        assert all("attribute" not in c.record(0) for c in cols)
        _, dead, st = _parse(cols, config)
        assert dead == [] and st["accepted"] == 300


# ----- hostile attributes ------------------------------------------------------------------------

def _smp_records():
    """Valid records of SMP: (attribute, inner block, payload) per flat block."""
    batch = _batch(200)
    p = SMP.protocol
    attr, inner = p.wire_block(batch.block)
    out = {}
    for i in range(len(batch)):
        j = int(batch.block[i])
        out.setdefault(j, {"config_fingerprint": SMP.fingerprint, "protocol": "smp",
                           "block": int(inner[i]), "seed": int(batch.seed[i]),
                           "payload": p.encode_payloads(j, batch.values[i:i + 1]).tobytes(),
                           "attribute": int(attr[i])})
    assert sorted(out) == [0, 1, 2]
    return out


def _hostile_smp():
    """(record, expected reason, substring of the message) rows for the SMP config."""
    good = _smp_records()
    a0, b0, b1 = good[0], good[1], good[2]
    return [
        (a0, Reason.OK, None),
        (b0, Reason.OK, None),
        (b1, Reason.OK, None),
        ({**a0, "attribute": None}, Reason.ATTRIBUTE_OUT_OF_RANGE, "attribute missing"),
        ({**b1, "attribute": 2}, Reason.ATTRIBUTE_OUT_OF_RANGE, "attribute 2 outside [0, 2)"),
        ({**a0, "attribute": -1}, Reason.ATTRIBUTE_OUT_OF_RANGE, "attribute -1 outside [0, 2)"),
        # GRR (attribute a) has one block; MSS (attribute b) two
        ({**a0, "block": 1}, Reason.BLOCK_OUT_OF_RANGE,
         "block 1 outside [0, 1) of attribute 0 ('a')"),
        ({**b1, "block": 2}, Reason.BLOCK_OUT_OF_RANGE,
         "block 2 outside [0, 2) of attribute 1 ('b')"),
        ({**b0, "block": -1}, Reason.BLOCK_OUT_OF_RANGE, "of attribute 1 ('b')"),
        # a block valid flat (2) but not inside attribute a
        ({**a0, "block": 2}, Reason.BLOCK_OUT_OF_RANGE, "outside [0, 1) of attribute 0"),
        ({**b1, "payload": b1["payload"] + b"\0"}, Reason.BAD_LENGTH,
         "attribute 1 ('b') block 1 expects"),
        ({**b0, "seed": -3}, Reason.BAD_SEED, "seed -3"),
        ({**b0, "config_fingerprint": "x"}, Reason.FINGERPRINT_MISMATCH, "config_fingerprint"),
    ]


def _check_dead_letters(rows, dead, st, n_ok):
    bad = [(rec, r, m) for rec, r, m in rows if r != Reason.OK]
    assert st["read"] == len(rows) and st["accepted"] == n_ok
    assert len(dead) == len(bad)
    for (rec, r, m), d in zip(bad, dead):
        assert d["reason"] == r.name and d["reason_code"] == int(r), (rec, d)
        assert m in d["message"], (m, d["message"])
        # the raw record round-trips, attribute included (version-1 bytes without one)
        want = {k: rec[k] for k in schemas.REPORT_V1_FIELDS}
        if rec.get("attribute") is not None:
            want["attribute"] = rec["attribute"]
        assert decode_report_record(d["raw"]) == want


def test_hostile_attributes_are_dead_letters_in_memory():
    rows = _hostile_smp()
    cols = ReportColumns.from_records([r for r, _, _ in rows], "m")
    accepted, dead, st = _parse([cols])
    _check_dead_letters(rows, dead, st, 3)
    assert sorted(int(b) for rb in accepted for b in rb.block) == [0, 1, 2]


@pytest.mark.parametrize("fmt", ["avro", "parquet"])
def test_hostile_attributes_are_dead_letters_from_files(tmp_path, fmt):
    rows = _hostile_smp()
    recs = [{**r, "event_time": None, "round": None} for r, _, _ in rows]
    if fmt == "avro":
        buf = io.BytesIO()
        fastavro.writer(buf, schemas.report_schema(optional_fields=True), recs)
        cols = list(read_avro_range(io.BytesIO(buf.getvalue()), "f.avro", 100))
    else:
        path = str(tmp_path / "h.parquet")
        table = pa.Table.from_pylist(
            [{k: v for k, v in r.items() if k not in ("event_time", "round")} for r in recs],
            schema=pa.schema([pa.field("config_fingerprint", pa.string()),
                              pa.field("protocol", pa.string()), pa.field("block", pa.int64()),
                              pa.field("seed", pa.int64()), pa.field("payload", pa.binary()),
                              pa.field("attribute", pa.int64())]))
        pq.write_table(table, path)
        with open(path, "rb") as fo:
            cols = list(read_parquet_range(fo, path, 100))
    accepted, dead, st = _parse(cols)
    _check_dead_letters(rows, dead, st, 3)


def test_attribute_for_a_protocol_without_attributes_is_a_dead_letter(tmp_path):
    good = records_for(GRR_EXACT, [1, 2, 3, 4])
    rows = [(good[0], Reason.OK, None),
            ({**good[1], "attribute": 0}, Reason.ATTRIBUTE_OUT_OF_RANGE,
             "attribute 0 given, but protocol 'grr' has no attributes"),
            ({**good[2], "attribute": -1}, Reason.ATTRIBUTE_OUT_OF_RANGE, "attribute -1 given"),
            ({**good[3], "attribute": None}, Reason.OK, None)]
    rows[0] = ({**good[0], "attribute": None}, Reason.OK, None)
    cols = ReportColumns.from_records([r for r, _, _ in rows], "m")
    _, dead, st = _parse([cols], GRR_EXACT)
    _check_dead_letters(rows, dead, st, 2)
    # the same from Parquet: a nullable attribute column
    path = str(tmp_path / "g.parquet")
    pq.write_table(pa.Table.from_pylist([r for r, _, _ in rows]), path)
    with open(path, "rb") as fo:
        _, dead, st = _parse(list(read_parquet_range(fo, path, 100)), GRR_EXACT)
    _check_dead_letters(rows, dead, st, 2)


def test_unrepresentable_attributes_are_malformed(tmp_path):
    good = _smp_records()[0]
    recs = [good, {**good, "attribute": "zero"}, {**good, "attribute": NO_ATTRIBUTE},
            {**good, "attribute": True}]
    cols = ReportColumns.from_records(recs, "m")
    assert sorted(cols.malformed) == [1, 2, 3]
    _, dead, st = _parse([cols])
    assert st["accepted"] == 1 and st["rejected"] == {"MALFORMED_RECORD": 3}
    assert all("attribute" in d["message"] for d in dead)
    # Parquet: a uint64 beyond int64 and int64 min are malformed; null is a missing attribute
    path = str(tmp_path / "u.parquet")
    base = {k: [good[k]] * 4 for k in ("config_fingerprint", "protocol", "block", "seed",
                                       "payload")}
    pq.write_table(pa.table({**base, "attribute": pa.array([0, 2**63 + 5, None, 5], pa.uint64())}),
                   path)
    with open(path, "rb") as fo:
        cols = list(read_parquet_range(fo, path, 100))
    _, dead, st = _parse(cols)
    assert st["accepted"] == 1
    assert st["rejected"] == {"MALFORMED_RECORD": 1, "ATTRIBUTE_OUT_OF_RANGE": 2}
    assert "attribute" in dead[0]["message"]


# ----- mixed files -------------------------------------------------------------------------------

def test_mixed_round_file_reads_through_the_generic_path(decoded_by_fastavro):
    good = _smp_records()
    recs = []
    for i in range(60):
        r = dict(good[i % 3])
        r["round"] = None if i % 2 else i // 2
        r["attribute"] = r["attribute"] if i % 5 else None  # some without: dead letters
        r["event_time"] = None
        recs.append(r)
    buf = io.BytesIO()
    fastavro.writer(buf, schemas.report_schema(optional_fields=True), recs)
    cols = list(read_avro_range(io.BytesIO(buf.getvalue()), "f.avro", 25))
    assert sum(decoded_by_fastavro) == 60
    rnd = np.concatenate([c.round for c in cols])
    attr = np.concatenate([c.attribute for c in cols])
    np.testing.assert_array_equal(rnd, [NO_ROUND if i % 2 else i // 2 for i in range(60)])
    np.testing.assert_array_equal(
        attr, [NO_ATTRIBUTE if i % 5 == 0 else good[i % 3]["attribute"] for i in range(60)])
    accepted, dead, st = _parse(cols)
    assert st["accepted"] == 48 and st["rejected"] == {"ATTRIBUTE_OUT_OF_RANGE": 12}
    assert sorted(int(b) for rb in accepted for b in rb.block) == sorted(
        i % 3 for i in range(60) if i % 5)


def test_slicing_keeps_the_attribute():
    cols = ReportColumns.from_records([r for r in _smp_records().values()], "m")
    part = cols.slice(1, 3)
    np.testing.assert_array_equal(part.attribute, cols.attribute[1:3])
    assert part.record(0)["attribute"] == cols.record(1)["attribute"]


# ----- single records ----------------------------------------------------------------------------

def test_single_record_encoding_round_trips_the_attribute():
    rec = _smp_records()[2]
    raw = encode_report(rec)
    assert decode_report_record(raw) == rec
    v1 = {k: v for k, v in rec.items() if k != "attribute"}
    assert decode_report_record(encode_report(v1)) == v1
    assert encode_report({**v1, "attribute": None}) == encode_report(v1)  # null: version-1 bytes
    with pytest.raises(ValueError, match="bytes left"):
        decode_report_record(raw + b"\x02")


def test_writer_schemas():
    names = lambda s: [f["name"].split(".")[-1] for f in s["fields"]]  # noqa: E731
    v1 = list(schemas.REPORT_V1_FIELDS)
    assert names(schemas.report_schema_with()) == v1
    assert names(schemas.report_schema_with_round()) == v1 + ["round"]
    assert names(schemas.report_schema_with(attribute=True)) == v1 + ["attribute"]
    assert names(schemas.report_schema_with(round_=True, attribute=True)) == v1 + ["round",
                                                                                   "attribute"]
    field = {f["name"]: f for f in schemas.load_json(schemas.REPORT)["fields"]}["attribute"]
    assert field["type"] == ["null", "int"] and field["default"] is None
    assert json.dumps(schemas.load_json(schemas.REPORT)).count('"attribute"') == 1


def test_split_reading_gives_the_attributes_of_one_whole_read():
    data = _avro(_pieces(_batch()), block_bytes=1500)
    whole = list(read_avro_range(io.BytesIO(data), "f.avro", 512))
    cuts = [0, len(data) // 3, len(data) // 2, len(data) - 700, len(data)]
    parts = [c for a, b in zip(cuts, cuts[1:])
             for c in read_avro_range(io.BytesIO(data), "f.avro", 512, a, b)]
    for field in ("attribute", "block", "seed"):
        np.testing.assert_array_equal(np.concatenate([getattr(c, field) for c in parts]),
                                      np.concatenate([getattr(c, field) for c in whole]))


def test_seed_bounds_are_per_inner_protocol():
    """SMP with an OLH and a GRR attribute: OLH's reports carry seeds, GRR's must carry 0."""
    from privfreq.protocols.config import CollectionConfig as Config
    p = Config("smp", {"attributes": ["a", "b"], "domains": [5, 9], "epsilon": 1.0,
                       "inner": ["olh", "grr"]}).protocol
    top = p.block_max_seeds()
    assert top[0] == p.inner_protocols[0].seed_bound() - 1 > 0 and top[1] == 0
