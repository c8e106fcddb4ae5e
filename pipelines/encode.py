"""Client-side batch randomization, as a gateway would run it (numpy, no Beam).

    privfreq encode --config config.json --input items.csv --output reports.avro [--seed S]
    privfreq encode --config config.json --input items.csv --output reports.parquet


``--input`` is CSV or Parquet; the items are the column named ``item``, or the only column. A CSV
whose first line is a single integer has no header (one column, every line an item); any other
first line is the header naming the columns. Every item must be an integer in ``[0, k)``, and
the file must hold at least one. Without ``--seed`` the randomness comes from OS entropy
(what a real deployment must do); with it, the output is reproducible (tests, demos).
Writes one file of reports (atomically: temp file, then rename): Avro with ``schemas/report.avsc``
records (the default), or Parquet with ``schemas.REPORT_PARQUET_SCHEMA`` when ``--format parquet``
is given or the output ends in ``.parquet``. Both are written vectorized (no per-report Python):
Avro blocks of about :data:`AVRO_BLOCK_BYTES`, Parquet row groups of about
:data:`PARQUET_ROW_GROUP_BYTES`. For the same ``--seed`` both formats hold the same reports in the
same order.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import re
import tempfile
import zlib
from typing import BinaryIO, Iterator

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from privfreq import schemas
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.simulate import batch_rows

__all__ = ["AVRO_BLOCK_BYTES", "FORMATS", "PARQUET_ROW_GROUP_BYTES", "encode_items", "read_items",
           "report_pieces", "report_records", "run", "write_avro_reports",
           "write_parquet_reports"]

FORMATS = ("avro", "parquet")
# Avro blocks of about 1 MiB: the reader's fixed cost per block (~30 numpy calls, ~0.1 ms) is then
# a few % of decoding its ~4e4 GRR records, while a block stays far below the 16 MiB split size, so
# splits stay even (and a corrupt block loses at most ~1 MiB of reports).
AVRO_BLOCK_BYTES = 1 << 20
# Parquet row groups are the split unit of a Parquet file: ~16 MiB of (uncompressed) reports, at
# most 2^20 rows, gives a 10^7-report file >= 10 splits and bounds a reader's memory. 64 MiB gave
# a 10^6-report MSS file (k=1024, ε=1: 127-byte payloads) only 2 row groups, and 2 ranges on 2
# workers ran 1.6x slower than the Avro file's 3 (benchmarks/ingest.py --protocol mss).
PARQUET_ROW_GROUP_BYTES = 16 << 20
MAX_ROW_GROUP_ROWS = 1 << 20


_INT = re.compile(r"\s*-?\d+\s*")  # an int64 CSV value as pyarrow parses it (plus range)


def _csv_header(path: str) -> list[str] | None:
    """The header names of a CSV file, or None when it has no header (see :func:`read_items`)."""
    with open(path, "rb") as f:
        first = b""
        for line in f:
            first = line.rstrip(b"\r\n")
            if first:
                break
    if not first:
        return None  # empty file: no header and no items
    fields = next(csv.reader([first.decode("utf-8-sig", errors="replace")]))
    if len(fields) == 1 and _INT.fullmatch(fields[0]):
        return None
    if all(_is_number(f) for f in fields):
        raise ValueError(f"input: {path!r} first line {first.decode(errors='replace')!r} holds "
                         f"only numbers, so it is no header, but it is not one integer item "
                         f"either; a CSV without a header must be a single column of integers")
    return fields


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bad_csv_row(path: str, read_options, column: str) -> str:
    """Why the items in ``column`` do not parse as int64, naming the first bad row."""
    col = pacsv.read_csv(path, read_options=read_options, convert_options=pacsv.ConvertOptions(
        include_columns=[column], column_types={column: pa.string()})).column(column)
    for i, value in enumerate(col.to_pylist()):
        if not _INT.fullmatch(value) or not -2**63 <= int(value) < 2**63:
            return f"row {i + 1}: {value!r} is not an integer item"
    return "items do not parse as 64-bit integers"


def read_items(path: str) -> np.ndarray:
    """Integer items from a CSV or Parquet file: the column named ``item``, or the only column.

    A CSV whose first line is a single integer has no header: it is one column of items, all of
    them data. Any other first line is the header naming the columns (a line of numbers only is
    an error). Errors name the row (rows count items from 1; the header and blank lines do not
    count); a file without items is an error."""
    if path.endswith(".parquet"):
        table = pq.read_table(path)
    elif path.endswith(".csv"):
        table = _read_csv(path)
    else:
        raise ValueError(f"input: must end in .csv or .parquet, got {path!r}")
    name = _item_column(path, table.column_names)
    col = table.column(name)
    if len(col) == 0:
        raise ValueError(f"input: {path!r} has no items")
    if col.null_count:
        row = col.to_pylist().index(None) + 1
        raise ValueError(f"input: {path!r} row {row}: column {name!r} is empty")
    items = col.to_numpy()
    if not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"input: {path!r} column {name!r}: items must be integers, "
                         f"got {col.type}")
    return items.astype(np.int64)


def _item_column(path: str, names: list[str]) -> str:
    if "item" in names:
        return "item"
    if len(names) == 1:
        return names[0]
    raise ValueError(f"input: needs a column named 'item' or exactly one column; "
                     f"{path!r} has {names}")


def _read_csv(path: str) -> pa.Table:
    header = _csv_header(path)
    if header is None:
        names, read_options = ["item"], pacsv.ReadOptions(column_names=["item"])
    else:
        names, read_options = header, pacsv.ReadOptions()
    column = _item_column(path, names)
    convert = pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.int64()},
                                   null_values=[""])
    try:
        return pacsv.read_csv(path, read_options=read_options, convert_options=convert)
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):  # a 0-byte file
            return pa.table({"item": pa.array([], pa.int64())})
        raise ValueError(f"input: {path!r} {_bad_csv_row(path, read_options, column)}") from None


def report_records(config: CollectionConfig, items: np.ndarray,
                   rng: np.random.Generator) -> Iterator[dict]:
    """Randomize ``items`` in batches and yield report.avsc records."""
    protocol = config.protocol
    protocol.check_items(items)  # fail before writing anything
    fp, pid = config.fingerprint, protocol.protocol_id
    rows = batch_rows(config)
    for start in range(0, len(items), rows):
        batch = protocol.randomize(items[start:start + rows], rng)
        for j in np.unique(batch.block).tolist():
            sel = np.nonzero(batch.block == j)[0]
            payload = protocol.encode_payloads(j, batch.values[sel])
            width = payload.shape[1]
            flat = payload.tobytes()
            seeds = batch.seed[sel].tolist()
            for i in range(len(sel)):
                yield {"config_fingerprint": fp, "protocol": pid, "block": j, "seed": seeds[i],
                       "payload": flat[i * width:(i + 1) * width]}


def report_pieces(config: CollectionConfig, items: np.ndarray, rng: np.random.Generator
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Randomize ``items`` in batches: ``(block j, seeds int64[r], payloads uint8[r, width_j])``
    pieces, in the order of :func:`report_records` (same reports for the same ``rng``)."""
    protocol = config.protocol
    protocol.check_items(items)  # fail before writing anything
    rows = batch_rows(config)
    for start in range(0, len(items), rows):
        batch = protocol.randomize(items[start:start + rows], rng)
        for j in np.unique(batch.block).tolist():
            sel = np.nonzero(batch.block == j)[0]
            payload = np.ascontiguousarray(protocol.encode_payloads(j, batch.values[sel]),
                                           dtype=np.uint8)
            yield j, batch.seed[sel].astype(np.int64), payload


def _zigzag_varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Avro zigzag varints of int64 ``values``: (uint8[n, 10] bytes, int64[n] lengths)."""
    v = np.asarray(values, dtype=np.int64)
    u = (v.astype(np.uint64) << np.uint64(1)) ^ (v >> np.int64(63)).astype(np.uint64)
    out = np.zeros((len(v), 10), dtype=np.uint8)
    lengths = np.ones(len(v), dtype=np.int64)
    for i in range(10):
        rest = u >> np.uint64(7)
        more = rest != 0
        out[:, i] = ((u & np.uint64(0x7F)) | np.where(more, np.uint64(0x80), np.uint64(0)))
        lengths += more
        u = rest
    return out, lengths


def _scalar_varint(value: int) -> bytes:
    raw, n = _zigzag_varints(np.array([value], dtype=np.int64))
    return raw[0, :n[0]].tobytes()


def _avro_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _scalar_varint(len(data)) + data


def _row_chunks(pieces, row_bytes, target: int):
    """Pieces cut into runs of at most ``target`` bytes (``row_bytes(width)`` per row)."""
    for j, seeds, payload in pieces:
        step = max(1, target // max(1, row_bytes(payload.shape[1])))
        for lo in range(0, len(seeds), step):
            yield j, seeds[lo:lo + step], payload[lo:lo + step]


def _avro_records(prefix: bytes, j: int, seeds: np.ndarray, payload: np.ndarray) -> bytes:
    """The report.avsc binary records of one piece, concatenated (vectorized)."""
    n, width = payload.shape
    head = prefix + _scalar_varint(j)
    tail = _scalar_varint(width)
    sv, slen = _zigzag_varints(seeds)
    if n and (slen == slen[0]).all():  # one layout: a fixed-width matrix
        s = int(slen[0])
        parts = [np.broadcast_to(np.frombuffer(head, np.uint8), (n, len(head))), sv[:, :s],
                 np.broadcast_to(np.frombuffer(tail, np.uint8), (n, len(tail))), payload]
        return np.concatenate(parts, axis=1).tobytes()
    matrix = np.concatenate([np.broadcast_to(np.frombuffer(head, np.uint8), (n, len(head))), sv,
                             np.broadcast_to(np.frombuffer(tail, np.uint8), (n, len(tail))),
                             payload], axis=1)
    keep = np.ones(matrix.shape, dtype=bool)
    keep[:, len(head):len(head) + 10] = np.arange(10) < slen[:, None]
    return matrix[keep].tobytes()  # row-major: each record's kept bytes, in order


def write_avro_reports(fo: BinaryIO, config: CollectionConfig, pieces, codec: str = "null",
                       block_bytes: int = AVRO_BLOCK_BYTES) -> int:
    """An Avro object container of report.avsc records from ``pieces``; returns the record count.

    The header comes from fastavro (schema, codec, random sync marker); the blocks are assembled
    with numpy. Any Avro reader reads the file."""
    if codec not in ("null", "deflate"):
        raise ValueError(f"codec: must be 'null' or 'deflate', got {codec!r}")
    header = io.BytesIO()
    fastavro.writer(header, schemas.report_schema(), [], codec=codec)
    head = header.getvalue()
    sync = head[-16:]
    fo.write(head)
    prefix = (_avro_string(config.fingerprint) + _avro_string(config.protocol.protocol_id))
    pending: list[bytes] = []
    count = size = total = 0

    def flush():
        data = b"".join(pending)
        if codec == "deflate":
            c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            data = c.compress(data) + c.flush()
        fo.write(_scalar_varint(count) + _scalar_varint(len(data)) + data + sync)

    for j, seeds, payload in _row_chunks(pieces, lambda w: len(prefix) + 14 + w, block_bytes):
        if not len(seeds):
            continue
        chunk = _avro_records(prefix, j, seeds, payload)
        pending.append(chunk)
        count += len(seeds)
        size += len(chunk)
        total += len(seeds)
        if size >= block_bytes:
            flush()
            pending, count, size = [], 0, 0
    if count:
        flush()
    return total


def write_parquet_reports(path: str, config: CollectionConfig, pieces,
                          row_group_bytes: int = PARQUET_ROW_GROUP_BYTES) -> int:
    """A Parquet file of ``schemas.REPORT_PARQUET_SCHEMA`` rows from ``pieces`` (vectorized);
    returns the row count. One ``write_table`` per row group."""
    fp_dict = pa.array([config.fingerprint], pa.string())
    pid_dict = pa.array([config.protocol.protocol_id], pa.string())
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
        table = pa.Table.from_arrays([
            pa.DictionaryArray.from_arrays(zeros, fp_dict),
            pa.DictionaryArray.from_arrays(zeros, pid_dict),
            pa.array(np.concatenate([np.full(len(s), j, dtype=np.int32)
                                     for j, s, _ in pending])),
            pa.array(np.concatenate([s for _, s, _ in pending])),
            payload], schema=schemas.REPORT_PARQUET_SCHEMA)
        writer.write_table(table, row_group_size=max(n, 1))

    with pq.ParquetWriter(path, schemas.REPORT_PARQUET_SCHEMA) as writer:
        for j, seeds, payload in _row_chunks(pieces, lambda w: w + 16, row_group_bytes):
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


def output_format(output: str, fmt: str | None) -> str:
    """``fmt`` if given, else ``parquet`` for a ``.parquet`` output and ``avro`` otherwise."""
    if fmt is None:
        return "parquet" if output.endswith(".parquet") else "avro"
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {list(FORMATS)}, got {fmt!r}")
    return fmt


def encode_items(config: CollectionConfig, items: np.ndarray, output: str,
                 seed: int | None = None, codec: str = "null", fmt: str | None = None) -> int:
    """Write the randomized reports of ``items`` to ``output`` (Avro unless ``fmt``/the extension
    says Parquet); returns the number written."""
    fmt = output_format(output, fmt)
    rng = np.random.default_rng(seed)  # None: fresh OS entropy
    pieces = report_pieces(config, items, rng)
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".reports-", suffix=f".{fmt}", dir=directory)
    try:
        if fmt == "parquet":
            os.close(fd)
            n = write_parquet_reports(tmp, config, pieces)
        else:
            with os.fdopen(fd, "wb") as fo:
                n = write_avro_reports(fo, config, pieces, codec=codec)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
    return n


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq encode", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="collection config JSON")
    parser.add_argument("--input", required=True,
                        help="items, .csv or .parquet: the column 'item' or the only column. A "
                             "CSV whose first line is a single integer has no header (one "
                             "column of items); otherwise the first line is the header")
    parser.add_argument("--output", required=True,
                        help="report file to write (.avro, or .parquet for Parquet)")
    parser.add_argument("--format", default=None, choices=list(FORMATS),
                        help="report file format (default: parquet for a .parquet output, "
                             "else avro)")
    parser.add_argument("--seed", type=int, default=None,
                        help="RNG seed (default: OS entropy; set only for reproducible tests)")
    parser.add_argument("--codec", default="null", choices=["null", "deflate"],
                        help="Avro block codec (Parquet files use Snappy)")
    args = parser.parse_args(argv)
    config = CollectionConfig.load(args.config)
    items = read_items(args.input)
    n = encode_items(config, items, args.output, args.seed, args.codec, args.format)
    logging.info("encode: wrote %d reports to %s", n, args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
