"""Vectorized validation: every bad report becomes a dead letter with the right reason."""
import io

import fastavro
import numpy as np
import pytest

from privfreq import schemas
from _tf_helpers import GRR_EXACT, MSS_BITMAP, MSS_INDICES, avro_bytes, records_for
from privfreq.protocols.base import Reason
from privfreq.schemas.avro import read_avro_range
from privfreq.schemas.columns import ReportColumns
from privfreq.transforms.parse import merge_stats, parse_columns


def _parse(config, recs):
    cols = ReportColumns.from_records(recs, "test.avro", fast=True)
    return parse_columns(cols, config)


def _reasons(dead):
    return [d["reason"] for d in dead]


def test_valid_reports_are_all_accepted_with_their_values():
    items = np.arange(200) % 500
    recs = records_for(MSS_INDICES, items, seed=3)
    batches, dead, stats = _parse(MSS_INDICES, recs)
    assert dead == [] and stats == {"read": 200, "accepted": 200, "rejected": {}, "regions": {}}
    ref = MSS_INDICES.protocol.randomize(items, np.random.default_rng(3))
    for b in batches:
        for j in np.unique(b.block):
            expect = ref.values[ref.block == j]
            got = b.values[b.block == j]
            np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(expect, axis=0))


def test_each_malformed_report_gets_its_reason_indices_encoding():
    good = records_for(MSS_INDICES, [1, 2, 3, 4, 5])
    fp = MSS_INDICES.fingerprint
    bad = [
        ({**good[0], "config_fingerprint": "0123456789abcdef"}, "FINGERPRINT_MISMATCH"),
        ({**good[0], "protocol": "grr"}, "PROTOCOL_MISMATCH"),
        ({**good[0], "block": 2}, "BLOCK_OUT_OF_RANGE"),
        ({**good[0], "block": -1}, "BLOCK_OUT_OF_RANGE"),
        ({**good[0], "seed": 5}, "BAD_SEED"),
        ({**good[0], "payload": b"\x01"}, "BAD_LENGTH"),             # wrong-size subset
        ({**good[0], "payload": b"\x01\x02\x03"}, "BAD_LENGTH"),
        ({"config_fingerprint": fp, "protocol": "mss", "block": 0, "seed": 0,
          "payload": bytes([3, 252])}, "VALUE_OUT_OF_RANGE"),      # residue 252 >= m_0 = 251
        ({"config_fingerprint": fp, "protocol": "mss", "block": 0, "seed": 0,
          "payload": bytes([9, 9])}, "DUPLICATE_VALUE"),           # repeated subset member
        ({"config_fingerprint": fp, "protocol": "mss", "block": 0, "seed": 0,
          "payload": b"\xff\xfe\xfd\xfc\xfb"}, "BAD_LENGTH"),       # garbage bytes
    ]
    recs = good + [r for r, _ in bad]
    batches, dead, stats = _parse(MSS_INDICES, recs)
    assert stats["read"] == len(recs)
    assert stats["accepted"] == sum(len(b) for b in batches) == len(good)
    assert stats["accepted"] + sum(stats["rejected"].values()) == stats["read"]
    assert _reasons(dead) == [why for _, why in bad]
    for d, (rec, why) in zip(dead, bad):
        assert d["reason_code"] == Reason[why].value
        assert d["source"].startswith("test.avro#")
        assert fastavro.schemaless_reader(io.BytesIO(d["raw"]), schemas.report_schema()) == rec
        assert d["message"]
    assert "0123456789abcdef" in dead[0]["message"]


def test_bitmap_subsets_of_the_wrong_size_or_with_padding_bits_are_rejected():
    fp = MSS_BITMAP.fingerprint
    base = {"config_fingerprint": fp, "protocol": "mss", "seed": 0}
    recs = [{**base, "block": 0, "payload": bytes([0b0000111])},       # ω_0 = 3 of 7: valid
            {**base, "block": 0, "payload": bytes([0b0001111])},       # 4 members
            {**base, "block": 0, "payload": bytes([0b0000011])},       # 2 members
            {**base, "block": 0, "payload": bytes([0b10000011])},      # bit 7 is padding (m = 7)
            {**base, "block": 1, "payload": bytes([0b111111, 0])},     # ω_1 = 6 of 16: valid
            {**base, "block": 1, "payload": bytes([0xff, 0xff])}]      # 16 members
    batches, dead, stats = _parse(MSS_BITMAP, recs)
    assert stats["accepted"] == 2
    assert _reasons(dead) == ["BAD_LENGTH", "BAD_LENGTH", "BAD_PADDING", "BAD_LENGTH"]
    assert all("decode_payloads" in d["message"] for d in dead)


def test_interleaved_bitmap_blocks_are_gathered_and_counted_exactly():
    # Blocks 0 and 1 interleave (1- and 2-byte payloads): each block's rows are gathered from the
    # shared payload buffer; bad rows between them are dead-lettered, the rest counted exactly.
    items = np.arange(300) % 20
    recs = records_for(MSS_BITMAP, items, seed=11)
    bad_at = [3, 50, 51, 200]
    for i in bad_at:
        recs[i] = {**recs[i], "payload": bytes(len(recs[i]["payload"]))}  # no members
    batches, dead, stats = _parse(MSS_BITMAP, recs)
    assert stats["accepted"] == 296 and _reasons(dead) == ["BAD_LENGTH"] * 4
    p = MSS_BITMAP.protocol
    ref = p.randomize(items, np.random.default_rng(11))
    keep = np.ones(300, bool)
    keep[bad_at] = False
    expect = p.add_reports(p.create_accumulator(), ref.take(keep))
    got = p.merge([p.add_reports(p.create_accumulator(), b) for b in batches])
    np.testing.assert_array_equal(got.counts, expect.counts)
    np.testing.assert_array_equal(got.n_block, expect.n_block)
    assert len(np.unique(ref.block)) == 2


def test_malformed_records_and_unreadable_files_are_counted_once():
    good = records_for(GRR_EXACT, [0, 1, 2])
    cols = ReportColumns.from_records(good + [{"protocol": "grr"}, "not a dict"], "f.avro")
    _, dead, stats = parse_columns(cols, GRR_EXACT)
    assert _reasons(dead) == ["MALFORMED_RECORD", "MALFORMED_RECORD"]
    assert stats == {"read": 5, "accepted": 3, "rejected": {"MALFORMED_RECORD": 2},
                     "regions": {}}

    data = avro_bytes(records_for(GRR_EXACT, np.arange(300) % 8), sync_interval=100)
    all_stats, n_dead = [], 0
    for cols in read_avro_range(io.BytesIO(data[:-50]), "cut.avro", 64):
        _, dead, st = parse_columns(cols, GRR_EXACT)
        all_stats.append(st)
        n_dead += len(dead)
    total = merge_stats(all_stats)
    assert set(total["rejected"]) == {"TRUNCATED_RECORDS"} and n_dead == 1
    assert total["regions"] == {"TRUNCATED_RECORDS": 1}
    assert total["accepted"] + total["rejected"]["TRUNCATED_RECORDS"] == total["read"] == 300


@pytest.mark.parametrize("config", [GRR_EXACT, MSS_INDICES, MSS_BITMAP])
def test_random_garbage_never_crashes_and_accounting_holds(config):
    rng = np.random.default_rng(11)
    p = config.protocol
    recs = []
    for _ in range(300):
        j = int(rng.integers(-1, p.n_blocks + 1))
        width = p.payload_width(min(max(j, 0), p.n_blocks - 1)) + int(rng.integers(-1, 2))
        recs.append({"config_fingerprint": config.fingerprint, "protocol": p.protocol_id,
                     "block": j, "seed": int(rng.integers(0, 2)),
                     "payload": rng.integers(0, 256, max(width, 0), dtype=np.uint8).tobytes()})
    batches, dead, stats = _parse(config, recs)
    assert stats["accepted"] + len(dead) == stats["read"] == 300
    assert sum(stats["rejected"].values()) == len(dead)
    for b in batches:  # whatever was accepted is countable
        p.add_reports(p.create_accumulator(), b)
