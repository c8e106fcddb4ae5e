"""Client-side batch randomization, as a gateway would run it (numpy, no Beam).

    privfreq encode --config config.json --input items.csv --output reports.avro [--seed S]

``--input`` is CSV (with a header) or Parquet; the items are the column named ``item``, or the only
column. Every item must lie in ``[0, k)``. Without ``--seed`` the randomness comes from OS entropy
(what a real deployment must do); with it, the output is reproducible (tests, demos).
Writes one Avro file of ``schemas/report.avsc`` records (atomically: temp file, then rename).
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from typing import Iterator

import fastavro
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

import schemas
from protocols.config import CollectionConfig
from transforms.simulate import batch_rows

__all__ = ["encode_items", "read_items", "report_records", "run"]


def read_items(path: str) -> np.ndarray:
    """Items from a CSV (header row required) or Parquet file: column ``item`` or the only one."""
    if path.endswith(".parquet"):
        table = pq.read_table(path)
    elif path.endswith(".csv"):
        table = pacsv.read_csv(path)
    else:
        raise ValueError(f"input: must end in .csv or .parquet, got {path!r}")
    if "item" in table.column_names:
        col = table.column("item")
    elif table.num_columns == 1:
        col = table.column(0)
    else:
        raise ValueError(f"input: needs a column named 'item' or exactly one column; "
                         f"{path!r} has {table.column_names}")
    if col.null_count:
        raise ValueError(f"input: column {col._name if hasattr(col, '_name') else 'item'} "
                         f"has {col.null_count} empty values")
    items = col.to_numpy()
    if not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"input: items must be integers, got dtype {items.dtype}")
    return items.astype(np.int64)


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


def encode_items(config: CollectionConfig, items: np.ndarray, output: str,
                 seed: int | None = None, codec: str = "null") -> int:
    """Write the randomized reports of ``items`` to ``output``; returns the number written."""
    rng = np.random.default_rng(seed)  # None: fresh OS entropy
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".reports-", suffix=".avro", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fo:
            fastavro.writer(fo, schemas.report_schema(), report_records(config, items, rng),
                            codec=codec)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(items)


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq encode", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="collection config JSON")
    parser.add_argument("--input", required=True, help="items, .csv (with header) or .parquet")
    parser.add_argument("--output", required=True, help="report Avro file to write")
    parser.add_argument("--seed", type=int, default=None,
                        help="RNG seed (default: OS entropy; set only for reproducible tests)")
    parser.add_argument("--codec", default="null", choices=["null", "deflate"],
                        help="Avro block codec")
    args = parser.parse_args(argv)
    config = CollectionConfig.load(args.config)
    items = read_items(args.input)
    n = encode_items(config, items, args.output, args.seed, args.codec)
    logging.info("encode: wrote %d reports to %s", n, args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
