"""Parquet report files (``schemas.REPORT_PARQUET_SCHEMA``): a vectorized writer and a reader of
row-group ranges into :class:`ReportColumns` batches. Beam-free (numpy, pyarrow).

Writing: :func:`write_parquet_reports`, row groups of about :data:`PARQUET_ROW_GROUP_BYTES`.

Row groups are the unit of splitting: a reader is given a range of row-group indices, reads them
batch by batch with pyarrow (the two string columns straight from their Parquet dictionaries, the
payload column as Arrow's offsets + data buffers) and builds :class:`ReportColumns` without touching
a row in Python. Locations are ``path#row`` (the file-wide row index, known from the footer).
The optional nullable columns ``round`` and ``attribute`` (any integer type) are read when present.

Hostile files never crash the job:

* a file whose footer cannot be read (truncated, not Parquet) is one ``UNREADABLE_FILE`` region
  from byte 0 counting one report (without the footer no row count is known); a row group that
  cannot be decoded keeps the rows of the batches decoded before the damage, and the rows it
  declares (footer) beyond them are one ``CORRUPT_RECORDS`` region at its first byte counting
  them;
* a missing or wrongly typed column (e.g. ``block`` as text) makes every row of the file
  ``malformed`` (one dead letter each, naming the column); a null in a row makes that row
  ``malformed``; an integer beyond int64 (``uint64``) likewise, and an ``attribute`` of int64
  min (it could not be told from a null one).
"""
from __future__ import annotations

import dataclasses
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from privfreq import schemas
from privfreq.schemas.avro import row_chunks
from privfreq.schemas.columns import (NO_ATTRIBUTE, NO_ROUND, RAW_LIMIT, ReportColumns, Unreadable,
                                      object_array)

__all__ = ["MAX_ROW_GROUP_ROWS", "PARQUET_MAGIC", "PARQUET_ROW_GROUP_BYTES", "read_parquet_range",
           "write_parquet_reports"]

PARQUET_MAGIC = b"PAR1"
# Parquet row groups are the split unit of a Parquet file: ~16 MiB of (uncompressed) reports, at
# most 2^20 rows, gives a 10^7-report file >= 10 splits and bounds a reader's memory. 64 MiB gave
# a 10^6-report MSS file (k=1024, ε=1: 127-byte payloads) only 2 row groups, and 2 ranges on 2
# workers ran 1.6x slower than the Avro file's 3 (benchmarks/ingest.py --protocol mss).
PARQUET_ROW_GROUP_BYTES = 16 << 20
MAX_ROW_GROUP_ROWS = 1 << 20
_STRINGS = ("config_fingerprint", "protocol")
_INTS = ("block", "seed")
_COLUMNS = ("config_fingerprint", "protocol", "block", "seed", "payload")
_OPTIONAL = ("round", "attribute")  # optional nullable integer columns, read when present


def _unreadable(fo: BinaryIO, offset: int, err: BaseException, what: str) -> Unreadable:
    try:
        fo.seek(offset)
        raw = fo.read(RAW_LIMIT)
        more = len(fo.read(1)) > 0
    except Exception:  # noqa: BLE001
        raw, more = b"", False
    note = f" (first {RAW_LIMIT} bytes kept)" if more else ""
    return Unreadable(offset, raw, f"cannot read {what} from byte {offset}: "
                                   f"{type(err).__name__}: {err}{note}")


def _type_problem(name: str, t: pa.DataType) -> str | None:
    """Why column ``name`` of Arrow type ``t`` cannot hold the report field, or None."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if name in _STRINGS:
        ok = pa.types.is_string(t) or pa.types.is_large_string(t)
    elif name in _INTS or name in _OPTIONAL:
        ok = pa.types.is_integer(t)
    else:
        ok = (pa.types.is_binary(t) or pa.types.is_large_binary(t)
              or pa.types.is_fixed_size_binary(t))
    return None if ok else f"column {name!r} has type {t}, not a report {name} type"


def _strings(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values, int32 codes, null mask) of a string column chunk."""
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    nulls = _nulls(arr)
    codes = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    values = object_array(arr.dictionary.to_pylist())
    if not len(values):
        values = object_array([None])
    return values, codes, nulls


def _nulls(arr: pa.Array) -> np.ndarray | None:
    if not arr.null_count:
        return None
    return arr.is_null().to_numpy(zero_copy_only=False)


def _ints(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(int64 values, null mask, beyond-int64 mask) of an integer column chunk."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    nulls = _nulls(arr)
    if nulls is not None:
        arr = arr.fill_null(0)
    v = arr.to_numpy(zero_copy_only=False)
    big = None
    if v.dtype == np.uint64:
        big = v > np.uint64(np.iinfo(np.int64).max)
        if not big.any():
            big = None
    return v.astype(np.int64, copy=False), nulls, big


def _binary(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(int64 offsets[n + 1], uint8 data, null mask) of a binary column chunk (zero copy)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    n = len(arr)
    nulls = _nulls(arr)
    if pa.types.is_fixed_size_binary(arr.type):
        w = arr.type.byte_width
        buf = arr.buffers()[1]
        data = np.frombuffer(buf, dtype=np.uint8)[arr.offset * w:(arr.offset + n) * w] \
            if buf is not None else np.empty(0, dtype=np.uint8)
        offsets = np.arange(n + 1, dtype=np.int64) * w
        if nulls is not None:  # a null slot still occupies w bytes: give it length 0
            lengths = np.where(nulls, 0, w)
            keep = np.repeat(~nulls, w)
            data = data[keep]
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
        return offsets, data, nulls
    off_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=off_type)[arr.offset:arr.offset + n + 1] \
        if off_buf is not None else np.zeros(n + 1, dtype=off_type)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None \
        else np.empty(0, dtype=np.uint8)
    offsets = offsets.astype(np.int64)
    if len(offsets) and offsets[0]:
        data = data[offsets[0]:offsets[-1]]
        offsets = offsets - offsets[0]
    # Null slots have zero length in Arrow's binary layout: nothing to fix.
    return offsets, data, nulls


def _malformed_rows(batch: pa.RecordBatch, rows: np.ndarray, why: str | list[str]
                    ) -> dict[int, tuple[bytes, str]]:
    picked = batch.take(pa.array(rows)).to_pylist()
    whys = [why] * len(rows) if isinstance(why, str) else why
    return {int(i): (repr(rec).encode("utf-8", "replace"), w)
            for i, rec, w in zip(rows.tolist(), picked, whys)}


def _columns(batch: pa.RecordBatch, source: str, first: int,
             schema_problem: str | None) -> ReportColumns:
    n = batch.num_rows
    if schema_problem is not None:  # every row is malformed: placeholders + one dead letter each
        none = object_array([None])
        zeros32, zeros = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int64)
        return ReportColumns(source, first, none, zeros32, none, zeros32, zeros, zeros.copy(),
                             np.zeros(n + 1, dtype=np.int64), np.empty(0, dtype=np.uint8),
                             _malformed_rows(batch, np.arange(n), schema_problem))
    fp_values, fp_codes, fp_null = _strings(batch.column("config_fingerprint"))
    pr_values, pr_codes, pr_null = _strings(batch.column("protocol"))
    block, b_null, b_big = _ints(batch.column("block"))
    seed, s_null, s_big = _ints(batch.column("seed"))
    offsets, data, p_null = _binary(batch.column("payload"))
    problems = [(fp_null, "field 'config_fingerprint' is null"),
                (pr_null, "field 'protocol' is null"),
                (b_null, "field 'block' is null"), (b_big, "field 'block' is beyond int64"),
                (s_null, "field 'seed' is null"), (s_big, "field 'seed' is beyond int64"),
                (p_null, "field 'payload' is null")]
    attribute = None
    if "attribute" in batch.schema.names:  # optional (report.avsc's attribute); null: NO_ATTRIBUTE
        a, a_null, a_big = _ints(batch.column("attribute"))  # nulls read as 0
        # A written int64 min could not be told from null, and a uint64 beyond int64 wraps: the
        # row is malformed (its placeholder value then never matters).
        bad = a == NO_ATTRIBUTE
        if a_big is not None:
            bad |= a_big
        problems.append((bad if bad.any() else None,
                         "field 'attribute' is beyond int64 (or int64 min)"))
        if a_null is not None:
            a = a.copy()
            a[a_null] = NO_ATTRIBUTE
        attribute = a if (a != NO_ATTRIBUTE).any() else None
    malformed = {}
    if any(m is not None for m, _ in problems):
        why = np.full(n, "", dtype=object)
        for mask, text in reversed(problems):  # first problem in field order wins
            if mask is not None:
                why[mask] = text
        rows = np.flatnonzero(why != "")
        malformed = _malformed_rows(batch, rows, why[rows].tolist())
        block = block.copy()
        seed = seed.copy()
        block[rows] = 0
        seed[rows] = 0
    round_ = None
    if "round" in batch.schema.names:  # optional (report.avsc's round): null -> NO_ROUND
        r, r_null, r_big = _ints(batch.column("round"))
        if r_null is not None or r_big is not None:
            r = r.copy()
            r[(r_null if r_null is not None else False) | (r_big if r_big is not None
                                                           else False)] = NO_ROUND
        round_ = r
    return ReportColumns(source, first, fp_values, fp_codes, pr_values, pr_codes, block, seed,
                         offsets, data, malformed, round=round_, attribute=attribute)


def _row_group_offset(md, i: int) -> int:
    rg = md.row_group(i)
    starts = []
    for c in range(rg.num_columns):
        col = rg.column(c)
        starts.append(col.dictionary_page_offset if col.has_dictionary_page
                      else col.data_page_offset)
    return int(min(starts)) if starts else 0


def read_parquet_range(fo: BinaryIO, source: str, batch_rows: int, first_group: int = 0,
                       end_group: int | None = None) -> Iterator[ReportColumns]:
    """Column batches of at most ``batch_rows`` rows of row groups ``[first_group, end_group)``.

    Never raises on bad content. An unreadable footer is reported by the range starting at row
    group 0 only, so a file read in several ranges still gives one dead letter for it.
    """
    if batch_rows < 1:
        raise ValueError(f"read_parquet_range: batch_rows must be >= 1, got {batch_rows}")
    try:
        pf = pq.ParquetFile(fo, read_dictionary=list(_STRINGS))
        md = pf.metadata
        arrow_schema = pf.schema_arrow
    except Exception as e:  # noqa: BLE001  (truncated / not Parquet: the whole file is bad)
        if first_group == 0:
            yield ReportColumns.from_records([], source).with_unreadable(
                _unreadable(fo, 0, e, "the Parquet footer"))
        return
    end_group = md.num_row_groups if end_group is None else min(end_group, md.num_row_groups)
    names = arrow_schema.names
    missing = [c for c in _COLUMNS if c not in names]
    problem = (f"column {missing[0]!r} is missing (columns: {names})" if missing else None)
    if problem is None:
        for c in _COLUMNS:
            problem = _type_problem(c, arrow_schema.field(c).type)
            if problem:
                break
    for c in _OPTIONAL:
        if problem is None and c in names:
            problem = _type_problem(c, arrow_schema.field(c).type)
    columns = [c for c in _COLUMNS if c in names] if problem else list(_COLUMNS)
    if problem is None:
        columns += [c for c in _OPTIONAL if c in names]
    first = sum(md.row_group(i).num_rows for i in range(first_group))
    for g in range(first_group, end_group):
        rows_g = md.row_group(g).num_rows
        try:
            it = pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=columns or None,
                                 use_threads=False)
            done = 0
            for batch in it:
                if batch.num_rows:
                    yield _columns(batch, source, first + done, problem)
                done += batch.num_rows
            if done != rows_g:
                raise ValueError(f"row group {g} declares {rows_g} rows, decoded {done}")
        except Exception as e:  # noqa: BLE001  (corrupt row group: one dead letter for its rest)
            lost = max(rows_g - done, 0)
            u = _unreadable(fo, _row_group_offset(md, g), e, f"row group {g} (declares {rows_g} "
                            f"rows, {done} decoded, rows {first + done}..{first + rows_g - 1} "
                            f"lost)")
            yield ReportColumns.from_records([], source, first + done).with_unreadable(
                dataclasses.replace(u, n_reports=lost, reason="CORRUPT_RECORDS"))
        first += rows_g


def write_parquet_reports(path: str, fingerprint: str, protocol_id: str, pieces: Iterable,
                          row_group_bytes: int = PARQUET_ROW_GROUP_BYTES,
                          round_: int | None = None, wire_blocks=None) -> int:
    """A Parquet file of ``schemas.REPORT_PARQUET_SCHEMA`` rows from ``(block j, seeds int64[r],
    payloads uint8[r, width_j])`` pieces (vectorized); returns the row count. One ``write_table``
    per row group. With ``round_`` the optional ``round`` column is appended (every row
    ``round_``). With ``wire_blocks`` (a protocol with attributes: ``protocol.wire_block``, flat
    blocks -> ``(attribute, inner block)`` arrays), ``j`` is the flat block: the ``attribute``
    column is appended (after ``round``) and ``block`` holds the inner block."""
    schema = schemas.REPORT_PARQUET_SCHEMA
    if round_ is not None:
        schema = schema.append(schemas.REPORT_PARQUET_ROUND_FIELD)
    if wire_blocks is not None:
        schema = schema.append(schemas.REPORT_PARQUET_ATTRIBUTE_FIELD)
    fp_dict = pa.array([fingerprint], pa.string())
    pid_dict = pa.array([protocol_id], pa.string())
    total = 0
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []
    rows = size = 0

    def flush(writer):
        n = sum(len(s) for _, s, _ in pending)
        lengths = np.concatenate([np.full(len(s), p.shape[1], dtype=np.int64)
                                  for _, s, p in pending])
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.concatenate([p.reshape(-1) for _, _, p in pending])
        if offsets[-1] < 2**31:
            payload = pa.BinaryArray.from_buffers(
                pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)),
                                 pa.py_buffer(data)])
        else:
            payload = pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
            ).cast(pa.binary())
        zeros = pa.array(np.zeros(n, dtype=np.int32))
        block = np.concatenate([np.full(len(s), j, dtype=np.int64) for j, s, _ in pending])
        if wire_blocks is not None:
            attribute, block = (np.asarray(a, dtype=np.int32) for a in wire_blocks(block))
        arrays = [
            pa.DictionaryArray.from_arrays(zeros, fp_dict),
            pa.DictionaryArray.from_arrays(zeros, pid_dict),
            pa.array(block.astype(np.int32, copy=False)),
            pa.array(np.concatenate([s for _, s, _ in pending])),
            payload]
        if round_ is not None:
            arrays.append(pa.array(np.full(n, round_, dtype=np.int64)))
        if wire_blocks is not None:
            arrays.append(pa.array(attribute))
        table = pa.Table.from_arrays(arrays, schema=schema)
        writer.write_table(table, row_group_size=max(n, 1))

    with pq.ParquetWriter(path, schema) as writer:
        for j, seeds, payload in row_chunks(pieces, lambda w: w + 16, row_group_bytes):
            if not len(seeds):
                continue
            pending.append((j, seeds, payload))
            rows += len(seeds)
            size += payload.size + 16 * len(seeds)
            total += len(seeds)
            if size >= row_group_bytes or rows >= MAX_ROW_GROUP_ROWS:
                flush(writer)
                pending, rows, size = [], 0, 0
        if pending:
            flush(writer)
    return total
