"""Reading report files block-wise into numpy column batches (Beam-free, testable alone).

``fastavro.block_reader`` hands us one Avro block at a time; records of consecutive blocks are
gathered into a :class:`ReportColumns` of at most ``batch_rows`` reports, so Beam sees one element
per batch instead of one per report. A file that cannot be decoded past some byte offset (truncated,
corrupt, not Avro at all) yields its readable batches, then one final :class:`ReportColumns` whose
``unreadable`` field carries the undecodable remainder; the parser turns it into exactly one dead
letter with ``Reason.UNREADABLE_FILE`` and counts it as one read, one rejected.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

import fastavro
import numpy as np

import schemas

__all__ = ["RAW_LIMIT", "ReportColumns", "Unreadable", "read_report_columns", "REPORT_FIELDS"]

# The undecodable remainder of a file kept in a dead letter is capped: the dead letter is for a
# human to inspect, and a multi-GB corrupt tail must not become one multi-GB Avro record.
RAW_LIMIT = 1 << 20

# Report field -> the Avro primitive types of a writer schema we can read on the fast path.
REPORT_FIELDS = {
    "config_fingerprint": ("string",),
    "protocol": ("string",),
    "block": ("int", "long"),
    "seed": ("int", "long"),
    "payload": ("bytes",),
}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass
class Unreadable:
    """The part of a file from ``offset`` on that could not be decoded."""

    offset: int
    raw: bytes        # at most RAW_LIMIT bytes of the remainder
    message: str


@dataclass
class ReportColumns:
    """A batch of report records as columns, before validation.

    Rows listed in ``malformed`` did not fit the report schema (missing or ill-typed fields);
    their column entries are placeholders (``None``/0/``b""``).
    """

    source: str                  # file path
    first_index: int             # record index (within the file) of row 0
    fingerprint: np.ndarray      # object[n]: str | None
    protocol: np.ndarray         # object[n]: str | None
    block: np.ndarray            # int64[n]
    seed: np.ndarray             # int64[n]
    payload: np.ndarray          # object[n]: bytes
    malformed: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # row -> (raw, message)
    unreadable: Unreadable | None = None

    def __len__(self) -> int:
        return len(self.block)

    @property
    def n_read(self) -> int:
        """Inputs this batch accounts for: its records plus one for an unreadable remainder."""
        return len(self) + (self.unreadable is not None)

    def record(self, i: int) -> dict[str, Any]:
        return {"config_fingerprint": self.fingerprint[i], "protocol": self.protocol[i],
                "block": int(self.block[i]), "seed": int(self.seed[i]),
                "payload": self.payload[i]}

    @classmethod
    def from_records(cls, records: list[dict], source: str = "<memory>", first_index: int = 0,
                     fast: bool = False) -> "ReportColumns":
        b = _Builder(source, first_index)
        b.add(records, fast)
        return b.flush()


def _field_types(t) -> tuple:
    """Avro type of a writer-schema field as a tuple of primitive names (unions flattened)."""
    if isinstance(t, str):
        return (t,)
    if isinstance(t, dict):
        return (t.get("type"),) if not t.get("logicalType") else ("logical",)
    if isinstance(t, list):
        return tuple(x for u in t for x in _field_types(u))
    return ("?",)


def fast_path_ok(writer_schema: dict) -> bool:
    """True when every record of a file with this writer schema has all report fields well-typed."""
    if not isinstance(writer_schema, dict) or writer_schema.get("type") != "record":
        return False
    types = {f["name"]: _field_types(f["type"]) for f in writer_schema.get("fields", [])}
    return all(len(types.get(name, ())) == 1 and types[name][0] in ok
               for name, ok in REPORT_FIELDS.items())


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


class _Builder:
    def __init__(self, source: str, first_index: int):
        self.source = source
        self.first_index = first_index
        self._reset()

    def _reset(self):
        self.fp, self.proto, self.block, self.seed, self.payload = [], [], [], [], []
        self.malformed: dict[int, tuple[bytes, str]] = {}

    def __len__(self):
        return len(self.block)

    def add(self, records: list, fast: bool) -> None:
        if fast:  # writer schema guarantees every field and its type: column-wise extraction
            self.fp += [r["config_fingerprint"] for r in records]
            self.proto += [r["protocol"] for r in records]
            self.block += [r["block"] for r in records]
            self.seed += [r["seed"] for r in records]
            self.payload += [r["payload"] for r in records]
            return
        for rec in records:
            why = _check_record(rec)
            if why is None:
                self.fp.append(rec["config_fingerprint"])
                self.proto.append(rec["protocol"])
                self.block.append(rec["block"])
                self.seed.append(rec["seed"])
                self.payload.append(rec["payload"])
            else:
                self.malformed[len(self.block)] = (repr(rec).encode("utf-8", "replace"), why)
                self.fp.append(None)
                self.proto.append(None)
                self.block.append(0)
                self.seed.append(0)
                self.payload.append(b"")

    def flush(self, unreadable: Unreadable | None = None) -> ReportColumns:
        n = len(self.block)
        fp = np.empty(n, dtype=object)
        fp[:] = self.fp
        proto = np.empty(n, dtype=object)
        proto[:] = self.proto
        payload = np.empty(n, dtype=object)
        payload[:] = self.payload
        out = ReportColumns(self.source, self.first_index, fp, proto,
                            np.array(self.block, dtype=np.int64).reshape(n),
                            np.array(self.seed, dtype=np.int64).reshape(n),
                            payload, self.malformed, unreadable)
        self.first_index += n
        self._reset()
        return out


def _unreadable(fo: BinaryIO, offset: int, err: BaseException) -> Unreadable:
    try:
        fo.seek(offset)
        raw = fo.read(RAW_LIMIT)
        more = len(fo.read(1)) > 0
    except Exception:  # noqa: BLE001  (the stream itself is broken: keep what we know)
        raw, more = b"", False
    note = f" (first {RAW_LIMIT} bytes kept)" if more else ""
    return Unreadable(offset, raw, f"cannot decode from byte {offset}: "
                                   f"{type(err).__name__}: {err}{note}")


def read_report_columns(fo: BinaryIO, source: str, batch_rows: int) -> Iterator[ReportColumns]:
    """Column batches of at most ``batch_rows`` records from one seekable Avro stream.

    Never raises on bad content: whatever cannot be decoded ends the file as ``unreadable``.
    """
    if batch_rows < 1:
        raise ValueError(f"read_report_columns: batch_rows must be >= 1, got {batch_rows}")
    builder = _Builder(source, 0)
    try:
        reader = fastavro.block_reader(fo)
        fast = fast_path_ok(reader.writer_schema)
        pos = fo.tell()
        blocks = iter(reader)
    except Exception as e:  # noqa: BLE001  (not Avro / broken header: the whole file is bad)
        yield builder.flush(_unreadable(fo, 0, e))
        return
    while True:
        try:
            block = next(blocks)
            records = list(block)
            if len(records) != block.num_records:
                raise EOFError(f"block at byte {block.offset} declares {block.num_records} "
                               f"records, decoded {len(records)}")
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001  (truncated/corrupt block: the rest is unreadable)
            yield builder.flush(_unreadable(fo, pos, e))
            return
        pos = block.offset + block.size
        # Split a large Avro block so that no batch exceeds batch_rows.
        for start in range(0, len(records), batch_rows):
            chunk = records[start:start + batch_rows]
            room = batch_rows - len(builder)
            builder.add(chunk[:room], fast)
            if len(builder) >= batch_rows:
                yield builder.flush()
            if len(chunk) > room:
                builder.add(chunk[room:], fast)
                if len(builder) >= batch_rows:
                    yield builder.flush()
    if len(builder):
        yield builder.flush()


def encode_report(record: dict) -> bytes:
    """A report record encoded schemaless with ``report.avsc`` (for dead letters)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schemas.report_schema(), record)
    return buf.getvalue()
