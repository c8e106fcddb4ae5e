"""Incremental totals: the merged count accumulator persisted in a versioned file (numpy only).

A daily aggregation merges its fresh counts with the totals of earlier runs instead of reprocessing
their reports. Because counts are exact integer sums (``Counts.merge_in``), estimates decoded from
merged totals equal those of one run over all the reports, bit for bit.

File format (``.npz``, written with ``np.savez``, no pickled objects)::

    meta     uint8[...]   UTF-8 JSON: {"format": "privfreq-totals", "format_version": 1,
                          "fingerprint", "protocol", "config" (collection config dict),
                          "n_reports", "n_block" (list), "count_shape" (list)}
    counts   int64[count_shape]
    n_block  int64[n_blocks]

The metadata duplicates the report counts and shape so that a file whose arrays disagree with its
metadata (truncated, hand-edited) is refused on load rather than silently biasing an estimate.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from privfreq.protocols.base import Counts
from privfreq.protocols.config import CollectionConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "Totals", "dumps", "load", "loads", "merge", "save"]

FORMAT = "privfreq-totals"
FORMAT_VERSION = 1  # bump only with a reader for every older version kept in loads()


@dataclass
class Totals:
    """Merged counts of one collection config, with that config."""

    config: CollectionConfig
    counts: Counts

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint

    @property
    def n_reports(self) -> int:
        return self.counts.n

    def check(self) -> "Totals":
        """``ValueError`` unless the count tensor has the config's shape and integer dtype."""
        p = self.config.protocol
        shape = tuple(p.count_shape())
        if tuple(self.counts.counts.shape) != shape or self.counts.n_block.shape != (p.n_blocks,):
            raise ValueError(
                f"totals: counts of shape {self.counts.counts.shape}/{self.counts.n_block.shape} do "
                f"not fit config {self.fingerprint} ({shape}/({p.n_blocks},))")
        if self.counts.counts.dtype != np.int64 or self.counts.n_block.dtype != np.int64:
            raise ValueError("totals: counts and n_block must be int64")
        if (self.counts.n_block < 0).any():
            raise ValueError("totals: negative report counts")
        return self

    def estimate(self):
        """The protocol's raw estimate from these totals."""
        return self.config.protocol.estimate(self.counts.copy())


def dumps(totals: Totals) -> bytes:
    """Serialise ``totals`` to the versioned ``.npz`` bytes."""
    totals.check()
    c = totals.counts
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "fingerprint": totals.fingerprint, "protocol": totals.config.protocol_id,
            "config": totals.config.to_dict(), "n_reports": int(c.n),
            "n_block": [int(v) for v in c.n_block], "count_shape": list(c.counts.shape)}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
             counts=c.counts, n_block=c.n_block)
    return buf.getvalue()


def loads(data: bytes, source: str = "<bytes>") -> Totals:
    """Parse totals bytes; ``ValueError`` (naming ``source``) for anything that is not valid totals."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            counts = np.array(z["counts"])
            n_block = np.array(z["n_block"])
    except (OSError, KeyError, ValueError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise ValueError(f"totals {source}: not a privfreq totals file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"totals {source}: not a privfreq totals file (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"totals {source}: format_version {meta.get('format_version')!r} is not "
                         f"supported (this code reads {FORMAT_VERSION})")
    config = CollectionConfig.from_dict(meta.get("config"))
    if config.fingerprint != meta.get("fingerprint"):
        raise ValueError(f"totals {source}: stored fingerprint {meta.get('fingerprint')!r} does not "
                         f"match its config ({config.fingerprint})")
    if (list(counts.shape) != meta.get("count_shape") or n_block.tolist() != meta.get("n_block")
            or int(n_block.sum()) != meta.get("n_reports")):
        raise ValueError(f"totals {source}: arrays disagree with the metadata (corrupt file?)")
    return Totals(config, Counts(counts, n_block)).check()


def save(path: str | os.PathLike | BinaryIO, totals: Totals) -> None:
    """Write totals to a local path (atomically: temporary file, then rename) or a binary file."""
    data = dumps(totals)
    if hasattr(path, "write"):
        path.write(data)  # type: ignore[union-attr]
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load(path: str | os.PathLike) -> Totals:
    return loads(Path(path).read_bytes(), str(path))


def merge(items: Iterable[Totals]) -> Totals:
    """Sum totals of one config into a new ``Totals`` (the inputs are not mutated).

    ``ValueError`` if the configs differ (by fingerprint) or if there is nothing to merge."""
    items = list(items)
    if not items:
        raise ValueError("totals: nothing to merge")
    first = items[0]
    for t in items[1:]:
        if t.fingerprint != first.fingerprint:
            raise ValueError(
                f"totals: refusing to merge totals of config {t.fingerprint} ({t.config.protocol_id}) "
                f"into totals of config {first.fingerprint} ({first.config.protocol_id}); totals "
                f"merge only within one collection config")
    acc = first.counts.copy()
    for t in items[1:]:
        acc.merge_in(t.counts)
    return Totals(first.config, acc).check()
