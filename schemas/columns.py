"""Report batches as numpy columns (:class:`ReportColumns`), the common output of the Avro and
Parquet readers (``schemas.avro``, ``schemas.parquet``) and the input of validation
(``transforms.parse``). Beam-free.

A reader gathers records into batches of at most ``batch_rows`` reports, so a pipeline handles one
element per batch instead of one per report. Content that cannot be decoded becomes a batch's
``unreadable`` region (one dead letter counting the reports it loses, :class:`Unreadable`); rows
that do not fit the report schema are listed in ``malformed`` (one dead letter each).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

__all__ = ["NO_ATTRIBUTE", "NO_EVENT_TIME", "NO_ROUND", "RAW_LIMIT", "Builder", "ReportColumns",
           "Unreadable", "object_array"]

# The undecodable remainder of a file kept in a dead letter is capped: the dead letter is for a
# human to inspect, and a multi-GB corrupt tail must not become one multi-GB Avro record.
RAW_LIMIT = 1 << 20
# ``ReportColumns.event_ms`` of a row without an event time (the ``event_time`` field null/absent).
NO_EVENT_TIME = np.iinfo(np.int64).min
# ``ReportColumns.round`` of a row without a round (the ``round`` field null/absent).
NO_ROUND = np.iinfo(np.int64).min
# ``ReportColumns.attribute`` of a row without an attribute (the ``attribute`` field null/absent).
# int64 min, not -1: a written attribute of -1 must stay a (non-null, out-of-range) attribute, so
# that a protocol without attributes rejects it; a written attribute equal to this value makes its
# row malformed (it could not be told from null).
NO_ATTRIBUTE = np.iinfo(np.int64).min
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

@dataclass
class Unreadable:
    """A region of a file from ``offset`` on that could not be decoded, and the reports it loses.

    ``n_reports`` is what the region declares and no reader recovered (an Avro block's record
    count minus its salvaged records, a Parquet row group's rows minus the decoded ones); a region
    that declares nothing readable (no header, no footer, an unreadable block header) counts 1.
    ``reason`` is a ``protocols.base.Reason`` name: ``TRUNCATED_RECORDS`` (declared past the end
    of a cut file), ``CORRUPT_RECORDS`` (declared inside the file, undecodable) or
    ``UNREADABLE_FILE`` (no count known).
    """

    offset: int
    raw: bytes        # at most RAW_LIMIT bytes of the unreadable region
    message: str
    n_reports: int = 1
    reason: str = "UNREADABLE_FILE"


def object_array(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


@dataclass
class ReportColumns:
    """A batch of report records as columns, before validation.

    The two string fields are dictionary-encoded (``*_values`` distinct values, ``*_codes`` one
    int32 index per row), so a batch compares its few distinct strings once instead of every row.
    Payloads are one flat ``uint8`` buffer with ``int64[n + 1]`` offsets (Arrow's binary layout).
    Rows listed in ``malformed`` did not fit the report schema (missing, null or ill-typed fields);
    their entries are placeholders (``None``/0/empty).

    Row ``i`` is located (in dead letters) as ``source#(first_index + i)``, or, when ``segments``
    is set (Avro), as ``source@<block byte offset>#<record in block>`` with the last segment
    ``(row_start, block_offset, record_base)`` whose ``row_start <= i`` (row ``row_start`` is
    record ``record_base`` of that block): a record's place must not depend on how the file was
    split, and a byte-range reader cannot know how many records precede it.
    """

    source: str                  # file path
    first_index: int             # index of row 0 (without segments)
    fp_values: np.ndarray        # object[d]: str | None
    fp_codes: np.ndarray         # int32[n]
    proto_values: np.ndarray     # object[e]: str | None
    proto_codes: np.ndarray      # int32[n]
    block: np.ndarray            # int64[n]
    seed: np.ndarray             # int64[n]
    payload_offsets: np.ndarray  # int64[n + 1]
    payload_data: np.ndarray     # uint8[payload_offsets[-1]] (at least)
    malformed: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # row -> (raw, message)
    unreadable: Unreadable | None = None
    segments: list[tuple[int, int, int]] | None = None
    # int64[n] report event times (ms since the epoch; NO_EVENT_TIME where a row has none), or
    # None when no row has one (the writer schema has no ``event_time`` field).
    event_ms: np.ndarray | None = None
    # int64[n] report rounds (NO_ROUND where a row has none), or None when no row has one.
    round: np.ndarray | None = None
    # int64[n] report attribute indices, as written (NO_ATTRIBUTE where a row has none; ``block``
    # is then the inner block within it), or None when no row has one.
    attribute: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.block)

    @property
    def n_read(self) -> int:
        """Reports this batch accounts for: its records plus those its unreadable region loses."""
        return len(self) + (self.unreadable.n_reports if self.unreadable is not None else 0)

    # Row-wise views, for dead letters and tests (not on the hot path).
    @property
    def fingerprint(self) -> np.ndarray:
        return self.fp_values[self.fp_codes] if len(self) else np.empty(0, dtype=object)

    @property
    def protocol(self) -> np.ndarray:
        return self.proto_values[self.proto_codes] if len(self) else np.empty(0, dtype=object)

    def payload_bytes(self, i: int) -> bytes:
        return self.payload_data[self.payload_offsets[i]:self.payload_offsets[i + 1]].tobytes()

    def record(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a report record (with ``attribute`` only when the row has one)."""
        rec = {"config_fingerprint": self.fp_values[self.fp_codes[i]],
               "protocol": self.proto_values[self.proto_codes[i]],
               "block": int(self.block[i]), "seed": int(self.seed[i]),
               "payload": self.payload_bytes(i)}
        if self.attribute is not None and self.attribute[i] != NO_ATTRIBUTE:
            rec["attribute"] = int(self.attribute[i])
        return rec

    def locate(self, i: int) -> str:
        """Where row ``i`` came from, independent of batching and splitting."""
        if self.segments is None:
            return f"{self.source}#{self.first_index + i}"
        k = int(np.searchsorted([s[0] for s in self.segments], i, side="right")) - 1
        start, offset, base = self.segments[k]
        return f"{self.source}@{offset}#{base + i - start}"

    def with_unreadable(self, unreadable: Unreadable) -> "ReportColumns":
        return dataclasses.replace(self, unreadable=unreadable)

    def slice(self, lo: int, hi: int) -> "ReportColumns":
        """Rows ``[lo, hi)`` as a batch (column views; the unreadable remainder is not kept)."""
        segments = None
        if self.segments is not None:
            segments = []
            for start, offset, base in self.segments:
                if start >= hi:
                    break
                if start <= lo:
                    segments = [(0, offset, base + lo - start)]
                else:
                    segments.append((start - lo, offset, base))
        offsets = self.payload_offsets[lo:hi + 1]
        return ReportColumns(
            self.source, self.first_index + lo, self.fp_values, self.fp_codes[lo:hi],
            self.proto_values, self.proto_codes[lo:hi], self.block[lo:hi], self.seed[lo:hi],
            offsets - offsets[0], self.payload_data[offsets[0]:offsets[-1]],
            {i - lo: v for i, v in self.malformed.items() if lo <= i < hi}, None, segments,
            None if self.event_ms is None else self.event_ms[lo:hi],
            None if self.round is None else self.round[lo:hi],
            None if self.attribute is None else self.attribute[lo:hi])

    @classmethod
    def from_records(cls, records: list, source: str = "<memory>", first_index: int = 0,
                     fast: bool = False) -> "ReportColumns":
        """A batch of in-memory records (ill-fitting ones as ``malformed``)."""
        b = Builder(source, first_index, with_segments=False)
        b.add_records(records, fast)
        return b.flush()


def _event_ms(value) -> int:
    """Milliseconds since the epoch of an ``event_time`` value (fastavro decodes
    timestamp-millis to datetimes; naive ones are UTC)."""
    if value is None:
        return NO_EVENT_TIME
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(round(value.timestamp() * 1000))
    return int(value)



def _round_of(rec) -> int:
    v = rec.get("round") if isinstance(rec, dict) else None
    return int(v) if _is_int(v) else NO_ROUND


def _attribute_of(rec) -> int | None:
    """The attribute of a record: NO_ATTRIBUTE when null/absent, None when it is not a valid
    one (not an integer, beyond int64, or the NO_ATTRIBUTE value itself)."""
    v = rec.get("attribute") if isinstance(rec, dict) else None
    if v is None:
        return NO_ATTRIBUTE
    return int(v) if _is_int(v) and v != NO_ATTRIBUTE else None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and _INT64_MIN <= v <= _INT64_MAX


def _check_record(rec) -> str | None:
    """Why ``rec`` is not a report record, or None when it is one."""
    if not isinstance(rec, dict):
        return f"record is a {type(rec).__name__}, not a record"
    for name, check in (("config_fingerprint", lambda v: isinstance(v, str)),
                        ("protocol", lambda v: isinstance(v, str)),
                        ("block", _is_int), ("seed", _is_int),
                        ("payload", lambda v: isinstance(v, bytes))):
        if name not in rec:
            return f"field {name!r} is missing"
        if not check(rec[name]):
            return f"field {name!r} has an invalid value of type {type(rec[name]).__name__}"
    return None


class _Dictionary:
    """Distinct values -> codes, shared by the pieces of one batch."""

    def __init__(self):
        self.index: dict = {}

    def code(self, value) -> int:
        c = self.index.get(value)
        if c is None:
            c = self.index[value] = len(self.index)
        return c

    def codes(self, values: list) -> np.ndarray:
        index = self.index
        get = index.get
        out = [get(v) for v in values]
        if None in out:
            out = [self.code(v) for v in values]
        return np.array(out, dtype=np.int32).reshape(len(values))

    def values(self) -> np.ndarray:
        return object_array(self.index)


class Builder:
    """Accumulates pieces (column arrays) into ReportColumns of bounded size."""

    def __init__(self, source: str, first_index: int, with_segments: bool):
        self.source = source
        self.first_index = first_index
        self.with_segments = with_segments
        self._reset()

    def _reset(self):
        self.n = 0
        self.fp, self.proto = _Dictionary(), _Dictionary()
        self.fp_codes, self.proto_codes, self.block, self.seed = [], [], [], []
        self.lengths, self.data = [], []   # per piece: int64 payload lengths, uint8 buffer
        self.event_ms: list = []           # per piece: int64 event times or None
        self.round: list = []              # per piece: int64 rounds or None
        self.attribute: list = []          # per piece: int64 attributes or None
        self.malformed: dict[int, tuple[bytes, str]] = {}
        self.segments: list[tuple[int, int, int]] = []

    def __len__(self):
        return self.n

    def segment(self, block_offset: int, record_base: int = 0) -> None:
        """Rows added from now on are records ``record_base, ...`` of the Avro block at
        ``block_offset``."""
        self.segments.append((self.n, block_offset, record_base))

    def drop_block(self, block_offset: int) -> None:
        """Forget the segment of a block that turned out unreadable (none of its rows were added)."""
        if self.segments and self.segments[-1][1:] == (block_offset, 0) \
                and self.segments[-1][0] == self.n:
            self.segments.pop()

    def add_batch(self, cols: ReportColumns) -> None:
        """Add the rows of another batch (re-coding its strings into this builder's dictionaries)."""
        if self.with_segments:
            for start, offset, base in cols.segments or []:
                self.segments.append((self.n + start, offset, base))
        fp_map = np.array([self.fp.code(v) for v in cols.fp_values] or [0], dtype=np.int32)
        pr_map = np.array([self.proto.code(v) for v in cols.proto_values] or [0], dtype=np.int32)
        off = cols.payload_offsets
        self.add_columns(fp_map[cols.fp_codes], pr_map[cols.proto_codes], cols.block, cols.seed,
                         np.diff(off), cols.payload_data[off[0]:off[-1]], cols.malformed,
                         cols.event_ms, cols.round, cols.attribute)

    def add_columns(self, fp_codes, proto_codes, block, seed, lengths, data,
                    malformed: dict | None = None, event_ms: np.ndarray | None = None,
                    round_: np.ndarray | None = None,
                    attribute: np.ndarray | None = None) -> None:
        """Add a piece: codes already from ``self.fp``/``self.proto``; ``data`` holds exactly the
        concatenated payloads of the piece; ``event_ms`` / ``round_`` / ``attribute`` None when
        it has none."""
        if malformed:
            for i, v in malformed.items():
                self.malformed[self.n + i] = v
        self.fp_codes.append(fp_codes)
        self.proto_codes.append(proto_codes)
        self.block.append(block)
        self.seed.append(seed)
        self.lengths.append(lengths)
        self.data.append(data)
        self.event_ms.append(event_ms)
        self.round.append(round_)
        self.attribute.append(attribute)
        self.n += len(block)

    def add_records(self, records: list, fast: bool) -> None:
        """Add records decoded by fastavro (or given in memory); ill-fitting ones as malformed."""
        malformed = {}
        if fast:  # writer schema guarantees every field and its type: column-wise extraction
            fps = [r["config_fingerprint"] for r in records]
            protos = [r["protocol"] for r in records]
            blocks = [r["block"] for r in records]
            seeds = [r["seed"] for r in records]
            payloads = [r["payload"] for r in records]
        else:
            fps, protos, blocks, seeds, payloads = [], [], [], [], []
            for i, rec in enumerate(records):
                why = _check_record(rec)
                if why is None:
                    fps.append(rec["config_fingerprint"])
                    protos.append(rec["protocol"])
                    blocks.append(rec["block"])
                    seeds.append(rec["seed"])
                    payloads.append(rec["payload"])
                else:
                    malformed[i] = (repr(rec).encode("utf-8", "replace"), why)
                    fps.append(None)
                    protos.append(None)
                    blocks.append(0)
                    seeds.append(0)
                    payloads.append(b"")
        n = len(records)
        times = [_event_ms(r.get("event_time")) if isinstance(r, dict) else NO_EVENT_TIME
                 for r in records]
        event_ms = None
        if any(t != NO_EVENT_TIME for t in times):
            event_ms = np.array(times, dtype=np.int64).reshape(n)
        rounds = [_round_of(r) for r in records]
        round_ = None
        if any(r != NO_ROUND for r in rounds):
            round_ = np.array(rounds, dtype=np.int64).reshape(n)
        attrs = [_attribute_of(r) for r in records]
        attribute = None
        if any(a != NO_ATTRIBUTE for a in attrs):
            for i, a in enumerate(attrs):
                if a is None:
                    if i not in malformed:
                        rec = records[i]
                        malformed[i] = (repr(rec).encode("utf-8", "replace"),
                                        f"field 'attribute' has an invalid value "
                                        f"{rec['attribute']!r}")
                    attrs[i] = NO_ATTRIBUTE
            attribute = np.array(attrs, dtype=np.int64).reshape(n)
        self.add_columns(self.fp.codes(fps), self.proto.codes(protos),
                         np.array(blocks, dtype=np.int64).reshape(n),
                         np.array(seeds, dtype=np.int64).reshape(n),
                         np.fromiter(map(len, payloads), dtype=np.int64, count=n),
                         np.frombuffer(b"".join(payloads), dtype=np.uint8), malformed, event_ms,
                         round_, attribute)

    def flush(self, unreadable: Unreadable | None = None) -> ReportColumns:
        def cat(parts, dtype):
            if not parts:
                return np.empty(0, dtype=dtype)
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        n = self.n
        lengths = cat(self.lengths, np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        event_ms = None
        if any(e is not None for e in self.event_ms):
            event_ms = cat([np.full(len(b), NO_EVENT_TIME, dtype=np.int64) if e is None else e
                            for b, e in zip(self.block, self.event_ms)], np.int64)
        round_ = None
        if any(r is not None for r in self.round):
            round_ = cat([np.full(len(b), NO_ROUND, dtype=np.int64) if r is None else r
                          for b, r in zip(self.block, self.round)], np.int64)
        attribute = None
        if any(a is not None for a in self.attribute):
            attribute = cat([np.full(len(b), NO_ATTRIBUTE, dtype=np.int64) if a is None else a
                             for b, a in zip(self.block, self.attribute)], np.int64)
        out = ReportColumns(self.source, self.first_index, self.fp.values(),
                            cat(self.fp_codes, np.int32), self.proto.values(),
                            cat(self.proto_codes, np.int32), cat(self.block, np.int64),
                            cat(self.seed, np.int64), offsets, cat(self.data, np.uint8),
                            self.malformed, unreadable,
                            list(self.segments) if self.with_segments else None, event_ms,
                            round_, attribute)
        self.first_index += n
        self._reset()
        return out

    def emit(self, batch_rows: int, final: bool = False) -> Iterator[ReportColumns]:
        """Yield full batches of ``batch_rows`` (and, if ``final``, the rest); keep the rest."""
        if self.n < batch_rows and not (final and self.n):
            return
        big = self.flush()
        n = len(big)
        full = n if final else n - n % batch_rows
        for lo in range(0, full, batch_rows):
            yield big.slice(lo, min(lo + batch_rows, full))
        if full < n:
            self.first_index = big.first_index
            self.add_batch(big.slice(full, n))
            self.first_index = big.first_index + full


