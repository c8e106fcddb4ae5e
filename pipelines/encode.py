"""Client-side batch randomization, as a gateway would run it (numpy, no Beam).

    privfreq encode --config config.json --input items.csv --output reports.avro [--seed S]
    privfreq encode --config config.json --input items.csv --output reports.parquet


``--input`` is CSV or Parquet; the items are the column named ``item``, or the only column. A CSV
whose first line is a single integer has no header (one column, every line an item); any other
first line is the header naming the columns. Every item must be an integer in ``[0, k)``, and
the file must hold at least one. Without ``--seed`` the randomness comes from OS entropy
(what a real deployment must do); with it, the output is reproducible (tests, demos).
Writes one local file of reports whole or not at all (a hidden temporary sibling, then one
rename): Avro with ``schemas/report.avsc`` records (the default), or Parquet with
``schemas.REPORT_PARQUET_SCHEMA`` when ``--format parquet`` is given or the output ends in
``.parquet``. Both are written vectorized by ``schemas.avro`` / ``schemas.parquet`` (no per-report
Python). For the same ``--seed`` both formats hold the same reports in the same order.

Needs only numpy, pyarrow and fastavro: this module (and ``privfreq encode``) never imports Beam.
"""
from __future__ import annotations

import argparse
import csv
import logging
import re
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from privfreq.protocols.config import CollectionConfig
from privfreq.schemas.avro import write_avro_reports
from privfreq.schemas.files import replaced_atomically
from privfreq.schemas.parquet import write_parquet_reports

__all__ = ["FORMATS", "encode_items", "output_format", "read_items", "report_pieces", "run"]

FORMATS = ("avro", "parquet")


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


def report_pieces(config: CollectionConfig, items: np.ndarray, rng: np.random.Generator
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Randomize ``items`` in batches: ``(block j, seeds int64[r], payloads uint8[r, width_j])``
    pieces, batch by batch, blocks in increasing order within a batch."""
    protocol = config.protocol
    protocol.check_items(items)  # fail before writing anything
    rows = protocol.batch_rows
    for start in range(0, len(items), rows):
        batch = protocol.randomize(items[start:start + rows], rng)
        for j in np.unique(batch.block).tolist():
            sel = np.nonzero(batch.block == j)[0]
            payload = np.ascontiguousarray(protocol.encode_payloads(j, batch.values[sel]),
                                           dtype=np.uint8)
            yield j, batch.seed[sel].astype(np.int64), payload


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
    fp, pid = config.fingerprint, config.protocol.protocol_id
    with replaced_atomically(output) as tmp:
        if fmt == "parquet":
            return write_parquet_reports(tmp, fp, pid, pieces)
        with open(tmp, "wb") as fo:
            return write_avro_reports(fo, fp, pid, pieces, codec=codec)


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
