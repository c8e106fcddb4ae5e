"""Block-wise Avro reading into column batches, including files that cannot be fully read."""
import io

import numpy as np
import pytest

from _tf_helpers import GRR_EXACT, avro_bytes, records_for
from privfreq.schemas.avro import read_avro_range
from privfreq.schemas.columns import RAW_LIMIT, ReportColumns


def _read(data: bytes, batch_rows: int = 7) -> list[ReportColumns]:
    return list(read_avro_range(io.BytesIO(data), "mem.avro", batch_rows))


def test_batches_are_bounded_and_lossless():
    recs = records_for(GRR_EXACT, np.arange(50) % 8)
    batches = _read(avro_bytes(recs, sync_interval=64), batch_rows=7)
    assert all(len(b) <= 7 for b in batches)
    assert sum(len(b) for b in batches) == 50
    assert [b.first_index for b in batches] == list(range(0, 50, 7))
    got = [b.record(i) for b in batches for i in range(len(b))]
    assert got == recs
    assert all(b.unreadable is None and not b.malformed for b in batches)


def test_truncated_file_yields_readable_prefix_and_one_unreadable_region():
    recs = records_for(GRR_EXACT, np.arange(400) % 8)
    data = avro_bytes(recs, sync_interval=200)  # several Avro blocks
    cut = data[:len(data) * 2 // 3]
    batches = _read(cut, batch_rows=1000)
    unreadable = [b.unreadable for b in batches if b.unreadable is not None]
    assert len(unreadable) == 1 and batches[-1].unreadable is unreadable[0]
    n_records = sum(len(b) for b in batches)
    assert 0 < n_records < 400
    assert [b.record(i) for b in batches for i in range(len(b))] == recs[:n_records]
    assert unreadable[0].raw == cut[unreadable[0].offset:]
    assert unreadable[0].reason == "TRUNCATED_RECORDS" and unreadable[0].n_reports > 0
    # read counts the cut block's declared records: the salvaged ones plus the lost ones
    assert sum(b.n_read for b in batches) == n_records + unreadable[0].n_reports


def test_garbage_file_is_one_unreadable_from_offset_zero():
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (batch,) = _read(data)
    assert len(batch) == 0 and batch.n_read == 1
    assert batch.unreadable.offset == 0 and batch.unreadable.raw == data


def test_unreadable_remainder_is_capped():
    data = b"\x00" * (RAW_LIMIT + 10)
    (batch,) = _read(data)
    assert len(batch.unreadable.raw) == RAW_LIMIT
    assert "first" in batch.unreadable.message


def test_records_of_another_schema_are_malformed_not_fatal():
    other = {"type": "record", "name": "Other", "fields": [
        {"name": "config_fingerprint", "type": "string"},
        {"name": "protocol", "type": "string"},
        {"name": "block", "type": ["null", "int"]},
        {"name": "seed", "type": "long"}]}
    recs = [{"config_fingerprint": "x", "protocol": "grr", "block": 0, "seed": 0},
            {"config_fingerprint": "x", "protocol": "grr", "block": None, "seed": 0}]
    (batch,) = _read(avro_bytes(recs, schema=other))
    assert len(batch) == 2 and sorted(batch.malformed) == [0, 1]
    assert "'payload' is missing" in batch.malformed[0][1]


def test_batch_rows_must_be_positive():
    with pytest.raises(ValueError, match="batch_rows"):
        _read(b"", batch_rows=0)
