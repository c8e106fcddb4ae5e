"""Client-side batch randomization, as a gateway would run it (numpy, no Beam).

    privfreq encode --config config.json --input items.csv --output reports.avro [--seed S]
    privfreq encode --config config.json --input items.csv --output reports.parquet
    privfreq encode --config loloha.json --input day.parquet --round R --state users.sqlite \
        --output day-R.avro

``--input`` is CSV or Parquet; the items are the column named ``item``, or the only column; for
a config made with ``--domain names.txt`` (items with names) ``--domain`` names the same file and
the items are names: a ``.txt`` file (one per line), a CSV column headed ``item`` or a Parquet
column (``item``, or the only one);
a name outside the dictionary is an error naming it and its row, or with ``--unknown other`` the
config's "other" item. For
a multi-attribute protocol (``spl``, ``smp``, ``rsfd``, ``allomfree``) one integer column per
attribute, named as in the config (CSV with a header), a missing or out-of-domain value being an
error naming the column and the row. A CSV
whose first line is a single integer has no header (one column, every line an item); any other
first line is the header naming the columns. Every item must be an integer in ``[0, k)``, and
the file must hold at least one. Without ``--seed`` the randomness comes from OS entropy
(what a real deployment must do); with it, the output is reproducible (tests, demos).
Writes one local file of reports whole or not at all (a hidden temporary sibling, then one
rename): Avro with ``schemas/report.avsc`` records (the default), or Parquet with
``schemas.REPORT_PARQUET_SCHEMA`` when ``--format parquet`` is given or the output ends in
``.parquet``. Both are written vectorized by ``schemas.avro`` / ``schemas.parquet`` (no per-report
Python). For the same ``--seed`` both formats hold the same reports in the same order.

**Longitudinal protocols** (``lgrr``, ``losue``, ``lsue``, ``loloha``, ``biloloha``,
``dbitflip``; SPEC §7) keep per-user state: ``--state users.sqlite`` names the SQLite store
(``protocols.longitudinal_client.SqliteStateStore``) and the input needs the columns ``user_id``
and ``item`` (integers). Rows are handled in batches of :data:`STATE_BATCH_ROWS`; each batch is one
SQLite transaction (memo entries drawn for keys a user never used, ledger updated) committed before
the next batch starts, and the report file is renamed into place only after the last commit. A
crash at any point therefore leaves either no report file or a complete one, and every memo entry
a committed batch drew is reused by the re-run (a memo entry once used is never redrawn: a
re-run's reports come from the same permanent responses). ``--round R`` (an integer >= 0) is
written into every report's optional ``round`` field. A state file of another config, or a user
who has reported whose memo is missing, is a ``StateError`` (a ``ValueError``) before any report
is written. Without ``--state`` a longitudinal protocol randomizes every row as a fresh user.

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

__all__ = ["FORMATS", "STATE_BATCH_ROWS", "encode_items", "encode_with_state", "output_format",
           "read_columns", "read_items", "read_names", "read_tuples", "read_user_items",
           "report_pieces", "run"]

FORMATS = ("avro", "parquet")
# Rows per SQLite transaction of ``encode --state``: a commit with synchronous=FULL costs ~1-10 ms
# (an fsync), a batch of 2^18 users ~1-2 s of SQLite and numpy work, so the commit is <1 % of a
# batch (2^16 -> 2^18 cut the per-batch overheads; ~100 MB peak for LOLOHA), and a crash loses
# at most one batch of work (never state: the batch is rolled back whole).
STATE_BATCH_ROWS = 1 << 18


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


def read_names(path: str) -> pa.Array:
    """Names (a pyarrow string array) from ``.txt`` (one name per line, UTF-8, no header), a CSV
    whose header names a column ``item``, or a Parquet file's column ``item`` (or only column)."""
    if path.endswith(".txt"):
        from privfreq.protocols.domain import read_lines
        return pa.array(read_lines(path, "input"), pa.string())
    if path.endswith(".parquet"):
        table = pq.read_table(path)
    elif path.endswith(".csv"):
        header = _csv_header(path) or []
        if "item" not in header:   # a one-column CSV of names cannot tell its header from a name
            raise ValueError(f"input: {path!r}: a CSV of names needs a header with a column "
                             f"'item' (first line {header}); or use a .txt file, one name per line")
        column = "item"
        try:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                include_columns=[column], column_types={column: pa.string()},
                strings_can_be_null=True))
        except pa.ArrowInvalid as e:
            raise ValueError(f"input: {path!r}: {e}") from None
    else:
        raise ValueError(f"input: names must come from .txt, .csv or .parquet, got {path!r}")
    col = table.column(_item_column(path, table.column_names))
    if len(col) == 0:
        raise ValueError(f"input: {path!r} has no items")
    return col.combine_chunks()


def read_columns(path: str, columns: list[str], purpose: str) -> list[np.ndarray]:
    """Integer columns by name (int64 each) from a CSV (with a header) or Parquet file; errors
    name the file, the column and the first bad row (rows count from 1, the header not counted).
    ``purpose`` says in the error why the columns are needed."""
    if path.endswith(".parquet"):
        names = pq.read_schema(path).names
        _need_columns(path, names, columns, purpose)
        table = pq.read_table(path, columns=columns)
    elif path.endswith(".csv"):
        names = _csv_header(path) or []
        _need_columns(path, names, columns, purpose)
        read_options = pacsv.ReadOptions()
        convert = pacsv.ConvertOptions(include_columns=columns,
                                       column_types={c: pa.int64() for c in columns},
                                       null_values=[""])
        try:
            table = pacsv.read_csv(path, read_options=read_options, convert_options=convert)
        except pa.ArrowInvalid:
            for column in columns:
                why = _bad_csv_row(path, read_options, column)
                if why.startswith("row"):
                    raise ValueError(f"input: {path!r} column {column!r} {why}") from None
            raise ValueError(f"input: {path!r}: columns {columns} must hold 64-bit integers") \
                from None
    else:
        raise ValueError(f"input: must end in .csv or .parquet, got {path!r}")
    if table.num_rows == 0:
        raise ValueError(f"input: {path!r} has no rows")
    out = []
    for name in columns:
        col = table.column(name)
        if col.null_count:
            row = col.to_pylist().index(None) + 1
            raise ValueError(f"input: {path!r} row {row}: column {name!r} is empty")
        if not pa.types.is_integer(col.type):
            raise ValueError(f"input: {path!r} column {name!r} must hold integers, got {col.type}")
        out.append(col.to_numpy().astype(np.int64))
    return out


def read_user_items(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(user_id int64[n], item int64[n])`` from a CSV (with a header) or Parquet file with the
    columns ``user_id`` and ``item``; errors name the file and the first bad row."""
    users, items = read_columns(path, ["user_id", "item"], "--state")
    return users, items


def read_tuples(path: str, protocol, users: bool = False):
    """A multi-attribute protocol's items, int64[n, d], from one column per attribute (named as
    the config's attributes; with ``users`` also ``user_id`` first, returned separately). A value
    outside its attribute's domain is an error naming the column and the row."""
    names = list(protocol.attributes)
    cols = read_columns(path, (["user_id"] if users else []) + names,
                        f"the {protocol.protocol_id} config's attributes")
    x = np.stack(cols[1:] if users else cols, axis=1)
    for j, (name, k) in enumerate(zip(names, protocol.domains)):
        bad = np.flatnonzero((x[:, j] < 0) | (x[:, j] >= k))
        if len(bad):
            raise ValueError(f"input: {path!r} row {int(bad[0]) + 1}: column {name!r} holds "
                             f"{int(x[bad[0], j])}, outside its domain [0, {k})")
    return (cols[0], x) if users else x


def _need_columns(path: str, names: list[str], columns: list[str], purpose: str) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"input: {purpose} needs the columns {columns} (with a header for CSV); "
                         f"{path!r} lacks {missing} (columns: {names})")


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


def batch_pieces(protocol, batch) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The ``(block j, seeds, payloads)`` pieces of one ReportBatch, blocks in increasing order."""
    for j in np.unique(batch.block).tolist():
        sel = np.nonzero(batch.block == j)[0]
        payload = np.ascontiguousarray(protocol.encode_payloads(j, batch.values[sel]),
                                       dtype=np.uint8)
        yield j, batch.seed[sel].astype(np.int64), payload


def report_pieces(config: CollectionConfig, items: np.ndarray, rng: np.random.Generator
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Randomize ``items`` in batches: ``(block j, seeds int64[r], payloads uint8[r, width_j])``
    pieces, batch by batch, blocks in increasing order within a batch."""
    protocol = config.protocol
    protocol.check_items(items)  # fail before writing anything
    rows = protocol.batch_rows
    for start in range(0, len(items), rows):
        yield from batch_pieces(protocol, protocol.randomize(items[start:start + rows], rng))


def state_pieces(store, user_ids: np.ndarray, items: np.ndarray, rng: np.random.Generator,
                 batch_rows: int = STATE_BATCH_ROWS
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Pieces of the reports of ``(user_ids, items)`` through a ``SqliteStateStore``: one
    committed transaction per batch of ``batch_rows`` rows, before the batch's pieces are
    yielded."""
    for start in range(0, len(items), batch_rows):
        batch = store.report(user_ids[start:start + batch_rows], items[start:start + batch_rows],
                             rng)
        yield from batch_pieces(store.protocol, batch)


def output_format(output: str, fmt: str | None) -> str:
    """``fmt`` if given, else ``parquet`` for a ``.parquet`` output and ``avro`` otherwise."""
    if fmt is None:
        return "parquet" if output.endswith(".parquet") else "avro"
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {list(FORMATS)}, got {fmt!r}")
    return fmt


def _write(config: CollectionConfig, pieces, output: str, codec: str, fmt: str,
           round_: int | None) -> int:
    fp, pid = config.fingerprint, config.protocol.protocol_id
    extra = {} if round_ is None else {"round_": round_}  # without a round: the v1 call
    if config.protocol.wire_attributes:  # sampled multi-attribute: (attribute, inner block)
        extra["wire_blocks"] = config.protocol.wire_block
    with replaced_atomically(output) as tmp:
        if fmt == "parquet":
            return write_parquet_reports(tmp, fp, pid, pieces, **extra)
        with open(tmp, "wb") as fo:
            return write_avro_reports(fo, fp, pid, pieces, codec=codec, **extra)


def _check_round(round_: int | None) -> int | None:
    if round_ is not None and not 0 <= int(round_) < 2**63:
        raise ValueError(f"round: must be an integer >= 0, got {round_}")
    return None if round_ is None else int(round_)


def encode_items(config: CollectionConfig, items: np.ndarray, output: str,
                 seed: int | None = None, codec: str = "null", fmt: str | None = None,
                 round_: int | None = None) -> int:
    """Write the randomized reports of ``items`` to ``output`` (Avro unless ``fmt``/the extension
    says Parquet); returns the number written. ``round_``: written into every report."""
    fmt = output_format(output, fmt)
    round_ = _check_round(round_)
    rng = np.random.default_rng(seed)  # None: fresh OS entropy
    return _write(config, report_pieces(config, items, rng), output, codec, fmt, round_)


def encode_with_state(config: CollectionConfig, user_ids: np.ndarray, items: np.ndarray,
                      state: str, output: str, round_: int | None = None,
                      seed: int | None = None, codec: str = "null", fmt: str | None = None,
                      batch_rows: int = STATE_BATCH_ROWS) -> int:
    """Reports of ``(user_ids, items)`` of a longitudinal protocol through the SQLite state
    ``state`` (one transaction per batch, each committed before the output is renamed into
    place); returns the number written."""
    from privfreq.protocols.longitudinal_client import SqliteStateStore

    fmt = output_format(output, fmt)
    round_ = _check_round(round_)
    if not getattr(config.protocol, "longitudinal", False):
        raise ValueError(f"--state: protocol {config.protocol_id!r} keeps no state; --state "
                         f"needs a longitudinal protocol (lgrr, losue, lsue, loloha, biloloha, "
                         f"dbitflip)")
    config.protocol.check_items(items)  # fail before touching the state
    rng = np.random.default_rng(seed)
    with SqliteStateStore(state, config) as store:
        return _write(config, state_pieces(store, user_ids, items, rng, batch_rows), output,
                      codec, fmt, round_)


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
    parser.add_argument("--round", type=int, default=None, dest="round_",
                        help="collection round (an integer >= 0) written into every report's "
                             "optional 'round' field (default: none)")
    parser.add_argument("--state", default=None,
                        help="SQLite state of a longitudinal protocol's users (created if "
                             "missing); the input then needs columns 'user_id' and 'item'")
    parser.add_argument("--batch-rows", type=int, default=STATE_BATCH_ROWS,
                        help="rows per state transaction with --state")
    parser.add_argument("--domain", default=None, metavar="NAMES.txt",
                        help="the names file of a config made with --domain; the input's items "
                             "are then names (.txt one per line, or a CSV/Parquet column)")
    parser.add_argument("--unknown", choices=("error", "other"), default="error",
                        help="with --domain: a name outside the dictionary is an error (default) "
                             "or counts as the config's 'other' item")
    args = parser.parse_args(argv)
    config = CollectionConfig.load(args.config)
    if config.domain is not None and args.domain is None:
        raise ValueError("encode: the config was made with --domain: pass the same names file "
                         "with --domain (the input's items are names)")
    if args.state is not None:
        if args.batch_rows < 1:
            raise ValueError(f"--batch-rows: must be >= 1, got {args.batch_rows}")
        if getattr(config.protocol, "multi_attribute", False):
            users, items = read_tuples(args.input, config.protocol, users=True)
        else:
            users, items = read_user_items(args.input)
        n = encode_with_state(config, users, items, args.state, args.output, args.round_,
                              args.seed, args.codec, args.format, args.batch_rows)
    else:
        if getattr(config.protocol, "longitudinal", False):
            logging.warning("encode: %s without --state: every row is a fresh user (no memo "
                            "kept across rounds)", config.protocol_id)
        if args.domain is not None:
            from privfreq.protocols.domain import Domain
            items = Domain.for_config(args.domain, config.domain).ids(read_names(args.input),
                                                                      args.unknown)
        elif getattr(config.protocol, "multi_attribute", False):
            items = read_tuples(args.input, config.protocol)
        else:
            items = read_items(args.input)
        n = encode_items(config, items, args.output, args.seed, args.codec, args.format,
                         args.round_)
    logging.info("encode: wrote %d reports to %s", n, args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
