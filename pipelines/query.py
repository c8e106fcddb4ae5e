"""Estimate any candidate names from a sketch's saved totals (HCMS / CMS, SPEC §9), no Beam.

    privfreq query --config C.json --totals T.npz --candidates names.txt [--output est.csv]

``--totals`` is a ``protocols.totals`` file (``privfreq aggregate --totals-out``) of a config
whose protocol answers candidate lists (``hcms``, ``cms``); its fingerprint must equal the
config's. ``--candidates``: one name per line (UTF-8; trailing newline/CR stripped; blank lines
skipped; each name mapped by ``protocols.hashing.item_id``; a duplicate name is an error). Writes
CSV rows ``name,item_id,estimate,stderr,count`` (estimate: fraction of the n reports; count =
n × estimate) to ``--output`` or stdout, in the file's order.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from privfreq.protocols import totals as totals_lib
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.hashing import item_id

__all__ = ["query", "read_candidates", "run"]


def read_candidates(path: str) -> list[str]:
    """Names of a candidates file; ``ValueError`` for invalid UTF-8 (naming the line), duplicates,
    or no names at all."""
    raw = Path(path).read_bytes()
    names = []
    for i, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            names.append(line.decode("utf-8", errors="strict"))
        except UnicodeDecodeError as e:
            raise ValueError(f"--candidates {path}: line {i} is not valid UTF-8 ({e.reason})") \
                from None
    if not names:
        raise ValueError(f"--candidates {path}: no names")
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"--candidates {path}: duplicate name {name!r}")
        seen.add(name)
    return names


def query(config: CollectionConfig, totals: totals_lib.Totals, names: list[str]) -> list[dict]:
    """One row per name: ``name, item_id, estimate, stderr, count``."""
    if totals.fingerprint != config.fingerprint:
        raise ValueError(f"--totals: totals of config {totals.fingerprint} "
                         f"({totals.config.protocol_id}) do not belong to config "
                         f"{config.fingerprint} ({config.protocol_id})")
    proto = config.protocol
    if not hasattr(proto, "estimate_candidates"):
        raise ValueError(f"--config: protocol {config.protocol_id!r} has a listed domain; query "
                         f"needs a sketch protocol (hcms, cms)")
    ids = item_id(names)
    f, se = proto.estimate_candidates(totals.counts.copy(), ids)
    n = totals.n_reports
    return [{"name": s, "item_id": int(i), "estimate": float(e), "stderr": float(d),
             "count": float(e * n)} for s, i, e, d in zip(names, ids, f, se)]


def run(argv=None, save_main_session=True):
    ap = argparse.ArgumentParser(prog="privfreq query", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="collection config JSON (hcms or cms)")
    ap.add_argument("--totals", required=True, help="totals .npz (aggregate --totals-out)")
    ap.add_argument("--candidates", required=True, help="names, one per line (UTF-8)")
    ap.add_argument("--output", help="CSV path (default: stdout)")
    args = ap.parse_args(argv)
    config = CollectionConfig.load(args.config)
    rows = query(config, totals_lib.load(args.totals), read_candidates(args.candidates))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["name", "item_id", "estimate", "stderr", "count"],
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "estimate": f"{r['estimate']:.6g}", "stderr": f"{r['stderr']:.3g}",
                    "count": f"{r['count']:.1f}"})
    if args.output:
        Path(args.output).write_text(buf.getvalue(), encoding="utf-8")
    else:
        sys.stdout.write(buf.getvalue())
    return rows
