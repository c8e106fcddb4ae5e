"""Salvage of damaged report files: records before the damage are read, the records a block or row
group declares but that are lost are counted by reason, and accepted + rejected = read."""
import io

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _tf_helpers import GRR_EXACT, avro_bytes, records_for
from privfreq.schemas.avro import _varint, read_avro_range, write_avro_reports
from privfreq.schemas.parquet import read_parquet_range
from privfreq.transforms.parse import merge_stats, parse_columns


def _parse(batches, config=GRR_EXACT):
    stats, dead, records = [], [], []
    for cols in batches:
        _, d, st = parse_columns(cols, config)
        assert st["accepted"] + sum(st["rejected"].values()) == st["read"] == cols.n_read
        stats.append(st)
        dead += d
        records += [cols.record(i) for i in range(len(cols))]
    return merge_stats(stats), dead, records


def _layout(data: bytes):
    """(header end, [(block offset, data offset, [record end offsets], sync end)]) of a null-codec
    Avro file, from the container grammar."""
    sync = fastavro.reader(io.BytesIO(data))._header["sync"]
    pos = data.index(sync) + 16
    header_end, blocks = pos, []
    schema = fastavro.parse_schema(fastavro.reader(io.BytesIO(data)).writer_schema)
    while pos < len(data):
        count, p = _varint(data, pos)
        nbytes, p = _varint(data, p)
        bio = io.BytesIO(data[p:p + nbytes])
        ends = []
        for _ in range(count):
            fastavro.schemaless_reader(bio, schema, None)
            ends.append(p + bio.tell())
        assert ends[-1] == p + nbytes and data[p + nbytes:p + nbytes + 16] == sync
        blocks.append((pos, p, ends, p + nbytes + 16))
        pos = p + nbytes + 16
    return header_end, blocks


def test_avro_truncated_at_every_byte_offset():
    recs = records_for(GRR_EXACT, np.arange(24) % 8)
    data = avro_bytes(recs, sync_interval=80)  # several blocks of a few records
    header_end, blocks = _layout(data)
    assert len(blocks) >= 5
    for cut in range(len(data) + 1):
        stats, dead, got = _parse(read_avro_range(io.BytesIO(data[:cut]), "c.avro", 5))
        if cut < header_end:  # no header: nothing declared, the file counts as one lost report
            assert stats["read"] == 1 and stats["rejected"] == {"UNREADABLE_FILE": 1}, cut
            assert dead[0]["raw"] == data[:cut]
            continue
        whole = sum(len(b[2]) for b in blocks if b[3] <= cut)
        cut_block = [b for b in blocks if b[0] < cut < b[3]]
        if not cut_block:  # a cut at a block boundary leaves a well-formed, shorter file
            assert stats == {"read": whole, "accepted": whole, "rejected": {}, "regions": {}}
            assert got == recs[:whole] and dead == []
            continue
        (at, _, ends, _), = cut_block
        salvaged = sum(e <= cut for e in ends)
        lost = len(ends) - salvaged
        assert stats["accepted"] == whole + salvaged, cut       # every record wholly before it
        assert stats["read"] == whole + len(ends), cut           # the cut block's declared ones
        assert stats["rejected"] == ({"TRUNCATED_RECORDS": lost} if lost else {}), cut
        assert stats["regions"] == {"TRUNCATED_RECORDS": 1}, cut
        assert got == recs[:whole + salvaged]
        (letter,) = dead
        assert letter["reason"] == "TRUNCATED_RECORDS" and letter["reason_code"] == 11
        assert letter["raw"] == data[at:cut] and letter["source"] == f"c.avro@{at}"


def _deflate_file(n=6000, block_bytes=15000):
    p = GRR_EXACT.protocol
    batch = p.randomize(np.arange(n) % 8, np.random.default_rng(5))
    buf = io.BytesIO()
    write_avro_reports(buf, GRR_EXACT.fingerprint, "grr",
                       [(0, batch.seed, p.encode_payloads(0, batch.values))],
                       codec="deflate", block_bytes=block_bytes)
    data = buf.getvalue()
    return data, list(fastavro.reader(io.BytesIO(data)))


def test_avro_corrupt_deflate_block_salvages_its_prefix_and_counts_the_rest():
    data, recs = _deflate_file()
    blocks = list(fastavro.block_reader(io.BytesIO(data)))
    assert len(blocks) >= 4
    sync = fastavro.reader(io.BytesIO(data))._header["sync"]
    starts = [i + 16 for i in range(len(data)) if data.startswith(sync, i)][:-1]
    at = starts[2]                                  # block 2: smash its compressed bytes
    count, p = _varint(data, at)
    nbytes, p = _varint(data, p)
    bad = bytearray(data)
    mid = p + nbytes * 2 // 3
    bad[mid:mid + 6] = b"\xff" * 6
    stats, dead, got = _parse(read_avro_range(io.BytesIO(bytes(bad)), "d.avro", 64))
    before = sum(b.num_records for b in blocks[:2])
    salvaged = stats["accepted"] - (len(recs) - count)
    assert stats["read"] == len(recs)                # every declared record is counted
    assert 0 < salvaged < count                      # the inflater's prefix is read, not more
    # Raw deflate has no checksum: the bytes inflated between the damage and the point where
    # zlib notices it decode to a few garbage records, which validation rejects like any other.
    garbage = {k: v for k, v in stats["rejected"].items() if k != "CORRUPT_RECORDS"}
    assert 0 < sum(garbage.values()) <= 5
    assert salvaged + sum(stats["rejected"].values()) == count
    assert stats["regions"] == {"CORRUPT_RECORDS": 1}
    assert got[:before + salvaged] == recs[:before + salvaged]   # the accepted prefix is genuine
    assert got[-(len(recs) - before - count):] == recs[before + count:]
    corrupt = [d for d in dead if d["reason"] == "CORRUPT_RECORDS"]
    assert len(corrupt) == 1 and corrupt[0]["source"] == f"d.avro@{at}"
    assert "deflate stream" in corrupt[0]["message"]


def test_avro_truncated_deflate_block_salvages_a_prefix_that_grows_with_the_cut():
    data, recs = _deflate_file(n=300, block_bytes=4000)
    prev = -1
    last_block = max(i for i in range(len(data)) if data.startswith(
        fastavro.reader(io.BytesIO(data))._header["sync"], i, len(data) - 16))
    for cut in range(last_block + 40, len(data) - 16, 7):
        stats, _, got = _parse(read_avro_range(io.BytesIO(data[:cut]), "t.avro", 64))
        assert stats["read"] == len(recs) and got == recs[:stats["accepted"]]
        assert stats["accepted"] >= prev
        prev = stats["accepted"]
    assert prev > len(recs) - 50  # near the end almost the whole block is salvaged


def test_avro_cut_inside_a_block_header_counts_its_declared_records():
    recs = records_for(GRR_EXACT, np.arange(300) % 8)
    data = avro_bytes(recs, sync_interval=2000)
    _, blocks = _layout(data)
    at, p, ends, _ = blocks[-1]
    assert p - at >= 3  # two-byte size varint: cut between count and size
    stats, dead, _ = _parse(read_avro_range(io.BytesIO(data[:at + 2]), "h.avro", 64))
    assert stats["rejected"] == {"TRUNCATED_RECORDS": len(ends)}
    assert stats["read"] == len(recs)


def _pq_file(n=60, row_group_size=20):
    recs = records_for(GRR_EXACT, np.arange(n) % 8)
    t = pa.table({k: [r[k] for r in recs] for k in recs[0]})
    buf = io.BytesIO()
    pq.write_table(t, buf, row_group_size=row_group_size, compression="none",
                   use_dictionary=False, data_page_size=64, write_batch_size=4)
    return bytearray(buf.getvalue()), recs


def test_parquet_row_group_damage_counts_the_group_and_keeps_the_others():
    data, recs = _pq_file()
    md = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    assert md.num_row_groups == 3
    col = md.row_group(1).column(4)
    data[col.data_page_offset:col.data_page_offset + 8] = b"\xff" * 8
    stats, dead, got = _parse(read_parquet_range(io.BytesIO(bytes(data)), "r.parquet", 5))
    assert stats["read"] == 60 and stats["accepted"] == 40
    assert stats["rejected"] == {"CORRUPT_RECORDS": 20}
    assert got == recs[:20] + recs[40:]
    assert [d["reason"] for d in dead] == ["CORRUPT_RECORDS"]
    assert "row group 1 (declares 20 rows, 0 decoded" in dead[0]["message"]


def test_parquet_damage_inside_a_row_group_keeps_the_batches_before_it():
    data, recs = _pq_file(n=40, row_group_size=40)
    md = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    col = md.row_group(0).column(4)
    end = col.data_page_offset + col.total_compressed_size
    data[end - 20:end] = b"\xff" * 20  # the last page of the payload column
    stats, dead, got = _parse(read_parquet_range(io.BytesIO(bytes(data)), "r.parquet", 4))
    assert stats["read"] == 40 and 0 < stats["accepted"] < 40
    assert stats["rejected"] == {"CORRUPT_RECORDS": 40 - stats["accepted"]}
    assert got == recs[:stats["accepted"]]


def test_truncated_parquet_is_one_unreadable_file():
    data, _ = _pq_file()
    stats, dead, _ = _parse(read_parquet_range(io.BytesIO(bytes(data[:len(data) // 2])),
                                               "t.parquet", 5))
    assert stats == {"read": 1, "accepted": 0, "rejected": {"UNREADABLE_FILE": 1},
                     "regions": {"UNREADABLE_FILE": 1}}
