"""Incremental totals: the merged count accumulator persisted in a versioned file (numpy only).

A daily aggregation merges its fresh counts with the totals of earlier runs instead of reprocessing
their reports. Because counts are exact integer sums (``Counts.merge_in``), estimates decoded from
merged totals equal those of one run over all the reports, bit for bit.

File format (``.npz``, written with ``np.savez``, no pickled objects)::

    meta     uint8[...]   UTF-8 JSON: {"format": "privfreq-totals", "format_version": 2,
                          "fingerprint", "protocol", "config" (collection config dict),
                          "n_reports", "n_block" (list), "count_shape" (list),
                          "inputs" (list of {"digest", "size", "path"}),
                          "untracked_reports" (int)}
    counts   int64[count_shape]
    n_block  int64[n_blocks]

The metadata duplicates the report counts and shape so that a file whose arrays disagree with its
metadata (truncated, hand-edited) is refused on load rather than silently biasing an estimate.

**Inputs.** Totals remember which input files they hold: one :class:`InputFile` per file counted
(its content digest, ``schemas.files.file_digest``, its size, and the path it was read from), so a
later run refuses or skips (:func:`select_inputs`) a file whose content is already counted, under
any name. ``untracked_reports`` counts reports merged in from totals that recorded no inputs
(format version 1). Version-1 files are read with no inputs and all their reports untracked.
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
from privfreq.schemas.files import replaced_atomically

__all__ = ["FORMAT", "FORMAT_VERSION", "InputFile", "Totals", "dumps", "load", "loads", "merge",
           "save", "select_inputs"]

FORMAT = "privfreq-totals"
FORMAT_VERSION = 2  # bump only with a reader for every older version kept in loads()


@dataclass(frozen=True)
class InputFile:
    """One input file: content digest (``schemas.files.file_digest``), size in bytes, path."""

    digest: str
    size: int
    path: str

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the content: equal keys are byte-identical files (whatever their paths)."""
        return self.digest, self.size

    def to_dict(self) -> dict:
        return {"digest": self.digest, "size": self.size, "path": self.path}

    @classmethod
    def from_dict(cls, d: dict) -> "InputFile":
        return cls(str(d["digest"]), int(d["size"]), str(d["path"]))


@dataclass
class Totals:
    """Merged counts of one collection config, with that config and the inputs they hold."""

    config: CollectionConfig
    counts: Counts
    inputs: tuple[InputFile, ...] = ()
    untracked_reports: int = 0   # reports merged from totals that recorded no inputs

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
            "n_block": [int(v) for v in c.n_block], "count_shape": list(c.counts.shape),
            "inputs": [f.to_dict() for f in totals.inputs],
            "untracked_reports": int(totals.untracked_reports)}
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
    version = meta.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"totals {source}: format_version {version!r} is not supported (this "
                         f"code reads 1 and {FORMAT_VERSION})")
    config = CollectionConfig.from_dict(meta.get("config"))
    if config.fingerprint != meta.get("fingerprint"):
        raise ValueError(f"totals {source}: stored fingerprint {meta.get('fingerprint')!r} does not "
                         f"match its config ({config.fingerprint})")
    if (list(counts.shape) != meta.get("count_shape") or n_block.tolist() != meta.get("n_block")
            or int(n_block.sum()) != meta.get("n_reports")):
        raise ValueError(f"totals {source}: arrays disagree with the metadata (corrupt file?)")
    if version == 1:  # no inputs recorded: every report is untracked
        return Totals(config, Counts(counts, n_block), (), int(n_block.sum())).check()
    try:
        inputs = tuple(InputFile.from_dict(d) for d in meta.get("inputs", []))
        untracked = int(meta.get("untracked_reports", 0))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"totals {source}: malformed inputs list ({e})") from None
    return Totals(config, Counts(counts, n_block), inputs, untracked).check()


def save(path: str | os.PathLike | BinaryIO, totals: Totals) -> None:
    """Write totals to a local path (atomically: temporary file, then rename) or a binary file."""
    data = dumps(totals)
    if hasattr(path, "write"):
        path.write(data)  # type: ignore[union-attr]
        return
    with replaced_atomically(os.fspath(path)) as tmp:
        Path(tmp).write_bytes(data)


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
    inputs: dict[tuple[str, int], InputFile] = {}
    for t in items:
        for f in t.inputs:
            if f.key in inputs:
                raise ValueError(
                    f"totals: refusing to merge totals that both hold input {f.path} (digest "
                    f"{f.digest}, also counted as {inputs[f.key].path}): its reports would be "
                    f"counted twice")
            inputs[f.key] = f
    return Totals(first.config, acc, tuple(inputs.values()),
                  sum(t.untracked_reports for t in items)).check()


def select_inputs(files: list[InputFile], seen: Iterable[InputFile] = (),
                  skip_seen: bool = False) -> tuple[list[InputFile], dict]:
    """The files a run counts, and a report of what it found.

    A file whose content is in ``seen`` (the ``--totals-in`` inputs) is refused (``ValueError``
    naming every such file and where it was counted) unless ``skip_seen``, then skipped. Files of
    identical content within ``files`` are reported as ``duplicates``; with ``skip_seen`` only
    the first (by path) of each group is counted. Report keys: ``n_files``, ``n_bytes`` (of the
    counted files), ``duplicates`` (lists of paths), ``skipped_seen``, ``skipped_duplicates``.
    """
    seen_by_key = {f.key: f for f in seen}
    ordered = sorted(files, key=lambda f: f.path)
    already = [f for f in ordered if f.key in seen_by_key]
    if already and not skip_seen:
        names = "; ".join(f"{f.path} (counted as {seen_by_key[f.key].path})" for f in already)
        raise ValueError(f"{len(already)} input file(s) are already counted in --totals-in: "
                         f"{names}. Remove them from --input, or pass --skip-seen to skip them")
    groups: dict[tuple[str, int], list[InputFile]] = {}
    for f in ordered:
        groups.setdefault(f.key, []).append(f)
    duplicates = [[f.path for f in g] for g in groups.values() if len(g) > 1]
    selected, skipped_dup = [], []
    for f in ordered:
        if f.key in seen_by_key:
            continue
        if skip_seen and groups[f.key][0] is not f:
            skipped_dup.append(f.path)
            continue
        selected.append(f)
    report = {"n_files": len(selected), "n_bytes": sum(f.size for f in selected),
              "duplicates": duplicates, "skipped_seen": [f.path for f in already],
              "skipped_duplicates": skipped_dup}
    return selected, report
