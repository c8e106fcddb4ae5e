"""Reading report files block-wise into numpy column batches (Beam-free, testable alone).

Avro (``schemas/report.avsc``) is read by our own container-format reader, so that a file can be
read in byte ranges: the range ``[start, end)`` owns every block whose preceding sync marker starts
in it, and a reader of a later range resynchronises on the first sync marker at or after ``start``
(as Beam's ``AvroSource`` does). Reading a file in any number of ranges therefore gives exactly the
records of reading it whole. Records of a block are decoded vectorized when the block is a run of
records of one byte layout (what ``privfreq encode`` writes; checked byte-exactly per record),
otherwise by ``fastavro`` record by record.

Records are gathered into a :class:`ReportColumns` of at most ``batch_rows`` reports, so Beam sees
one element per batch instead of one per report. A block that cannot be decoded (truncated, corrupt,
unsupported codec) becomes an ``unreadable`` remainder: the bytes from the block up to the next
sync marker (or the end of the file), which the parser turns into exactly one dead letter with
``Reason.UNREADABLE_FILE`` (one read, one rejected); reading resumes at that sync marker, so a
corrupt block in the middle of a file loses only its own records. A file whose header is unreadable
(not Avro at all) is one unreadable remainder from byte 0.

Parquet readers (``transforms/parquet_batches.py``) produce the same :class:`ReportColumns`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

import fastavro
import numpy as np

from privfreq import schemas

__all__ = ["AVRO_MAGIC", "RAW_LIMIT", "REPORT_FIELDS", "ReportColumns", "Unreadable",
           "encode_report", "fast_path_ok", "read_avro_range", "read_report_columns"]

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
_FIELD_ORDER = tuple(REPORT_FIELDS)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
AVRO_MAGIC = b"Obj\x01"
SYNC_SIZE = 16
# Rows checked per step of the vectorized layout run (bounds the work wasted on a run that ends).
_RUN_CHUNK = 1 << 16
# A block whose layout runs are shorter than this on average is decoded by fastavro instead.
_MIN_RUN = 8


@dataclass
class Unreadable:
    """The part of a file from ``offset`` on that could not be decoded."""

    offset: int
    raw: bytes        # at most RAW_LIMIT bytes of the unreadable region
    message: str


def _object_array(values) -> np.ndarray:
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

    def __len__(self) -> int:
        return len(self.block)

    @property
    def n_read(self) -> int:
        """Inputs this batch accounts for: its records plus one for an unreadable remainder."""
        return len(self) + (self.unreadable is not None)

    # Row-wise views, for dead letters and tests (not on the hot path).
    @property
    def fingerprint(self) -> np.ndarray:
        return self.fp_values[self.fp_codes] if len(self) else np.empty(0, dtype=object)

    @property
    def protocol(self) -> np.ndarray:
        return self.proto_values[self.proto_codes] if len(self) else np.empty(0, dtype=object)

    def payload_bytes(self, i: int) -> bytes:
        return self.payload_data[self.payload_offsets[i]:self.payload_offsets[i + 1]].tobytes()

    @property
    def payload(self) -> np.ndarray:
        return _object_array(self.payload_bytes(i) for i in range(len(self)))

    def record(self, i: int) -> dict[str, Any]:
        return {"config_fingerprint": self.fp_values[self.fp_codes[i]],
                "protocol": self.proto_values[self.proto_codes[i]],
                "block": int(self.block[i]), "seed": int(self.seed[i]),
                "payload": self.payload_bytes(i)}

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
            {i - lo: v for i, v in self.malformed.items() if lo <= i < hi}, None, segments)

    @classmethod
    def from_records(cls, records: list, source: str = "<memory>", first_index: int = 0,
                     fast: bool = False) -> "ReportColumns":
        b = _Builder(source, first_index, with_segments=False)
        b.add_records(records, fast)
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


def _layout_ok(writer_schema: dict) -> bool:
    """True when the writer schema is exactly the report fields, in order (vectorized decoding)."""
    if not fast_path_ok(writer_schema):
        return False
    return tuple(f["name"] for f in writer_schema["fields"]) == _FIELD_ORDER


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
        return _object_array(self.index)


class _Builder:
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
                         np.diff(off), cols.payload_data[off[0]:off[-1]], cols.malformed)

    def add_columns(self, fp_codes, proto_codes, block, seed, lengths, data,
                    malformed: dict | None = None) -> None:
        """Add a piece: codes already from ``self.fp``/``self.proto``; ``data`` holds exactly the
        concatenated payloads of the piece."""
        if malformed:
            for i, v in malformed.items():
                self.malformed[self.n + i] = v
        self.fp_codes.append(fp_codes)
        self.proto_codes.append(proto_codes)
        self.block.append(block)
        self.seed.append(seed)
        self.lengths.append(lengths)
        self.data.append(data)
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
        self.add_columns(self.fp.codes(fps), self.proto.codes(protos),
                         np.array(blocks, dtype=np.int64).reshape(n),
                         np.array(seeds, dtype=np.int64).reshape(n),
                         np.fromiter(map(len, payloads), dtype=np.int64, count=n),
                         np.frombuffer(b"".join(payloads), dtype=np.uint8), malformed)

    def flush(self, unreadable: Unreadable | None = None) -> ReportColumns:
        def cat(parts, dtype):
            if not parts:
                return np.empty(0, dtype=dtype)
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        n = self.n
        lengths = cat(self.lengths, np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        out = ReportColumns(self.source, self.first_index, self.fp.values(),
                            cat(self.fp_codes, np.int32), self.proto.values(),
                            cat(self.proto_codes, np.int32), cat(self.block, np.int64),
                            cat(self.seed, np.int64), offsets, cat(self.data, np.uint8),
                            self.malformed, unreadable,
                            list(self.segments) if self.with_segments else None)
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


# ----- Avro container format ---------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag Avro long at ``buf[pos:]`` -> (value, next position); IndexError/ValueError if bad."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


class _Header:
    def __init__(self, meta: dict[str, bytes], sync: bytes, end: int, raw: bytes):
        self.meta, self.sync, self.end, self.raw = meta, sync, end, raw
        self.codec = meta.get("avro.codec", b"null").decode("ascii", "replace")
        self.writer_schema = json.loads(meta["avro.schema"].decode("utf-8"))
        self.parsed_schema = fastavro.parse_schema(self.writer_schema)
        self.layout = _layout_ok(self.writer_schema)
        self.fast = fast_path_ok(self.writer_schema)


def _read_header(fo: BinaryIO) -> _Header:
    """The container header (magic, metadata map, sync marker); raises on anything malformed."""
    fo.seek(0)
    buf = fo.read(1 << 16)
    while True:
        try:
            if buf[:4] != AVRO_MAGIC:
                raise ValueError("not an Avro object container file (bad magic)")
            pos, meta = 4, {}
            while True:
                count, pos = _varint(buf, pos)
                if count == 0:
                    break
                if count < 0:
                    count = -count
                    _, pos = _varint(buf, pos)  # block size in bytes, unused
                for _ in range(count):
                    n, pos = _varint(buf, pos)
                    if n < 0 or pos + n > len(buf):
                        raise IndexError
                    key = buf[pos:pos + n].decode("utf-8")
                    pos += n
                    n, pos = _varint(buf, pos)
                    if n < 0 or pos + n > len(buf):
                        raise IndexError
                    meta[key] = buf[pos:pos + n]
                    pos += n
            sync = buf[pos:pos + SYNC_SIZE]
            if len(sync) != SYNC_SIZE:
                raise IndexError
            end = pos + SYNC_SIZE
            return _Header(meta, sync, end, buf[:end])
        except IndexError:
            more = fo.read(max(len(buf), 1 << 16))
            if not more:
                raise EOFError("Avro header is truncated") from None
            buf += more


def _find_sync(fo: BinaryIO, sync: bytes, pos: int, size: int) -> int | None:
    """Position of the first sync marker at or after ``pos``, or None."""
    chunk = 1 << 20
    while pos < size:
        fo.seek(pos)
        buf = fo.read(chunk + SYNC_SIZE - 1)
        i = buf.find(sync)
        if i >= 0:
            return pos + i
        if len(buf) < chunk + SYNC_SIZE - 1:
            return None
        pos += chunk
    return None


def _decompress(codec: str, data: bytes) -> bytes:
    if codec == "null":
        return data
    if codec == "deflate":
        return zlib.decompress(data, -15)
    readers = getattr(getattr(fastavro, "read", None), "BLOCK_READERS", {})
    if codec in readers and readers[codec] is not None:
        return readers[codec](io.BytesIO(data)).read()
    raise ValueError(f"unsupported Avro codec {codec!r}")


def _varint_ok(m: np.ndarray, col: int, width: int) -> np.ndarray:
    """Per row: the ``width`` bytes at ``col`` are one varint (continuation bits 1...1 0)."""
    ok = m[:, col + width - 1] < 0x80
    for i in range(width - 1):
        ok &= m[:, col + i] >= 0x80
    return ok


def _varint_values(m: np.ndarray, col: int, width: int) -> np.ndarray:
    """Zigzag-decoded int64 values of the ``width``-byte varints at ``col`` (structure checked)."""
    if width == 1:  # the common case (small blocks, seed 0): no uint64 arithmetic
        b = m[:, col].astype(np.int64)
        return (b >> 1) ^ -(b & 1)
    u = np.zeros(len(m), dtype=np.uint64)
    for i in range(width):
        u |= (m[:, col + i] & 0x7F).astype(np.uint64) << np.uint64(7 * i)
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _decode_layout_runs(data: bytes, count: int, b: _Builder) -> bool:
    """Decode a block's records as runs of one byte layout, vectorized; False (builder untouched)
    when the block is not made of such runs (then fastavro decodes it).

    A run's template is its first record, decoded scalar: field offsets, varint widths, the bytes
    of the two strings and of the payload length. A following row of the same length belongs to
    the run iff its string and payload-length bytes equal the template's and its block and seed
    bytes are each one varint of the template's width -- then, by the Avro grammar, it is exactly
    one record of that length, so the run's records start every ``length`` bytes.
    """
    d = np.frombuffer(data, dtype=np.uint8)
    pieces = []
    pos = done = 0
    while done < count:
        if len(pieces) * _MIN_RUN > max(count, _MIN_RUN):
            return False  # runs too short: the vectorized path would cost more than fastavro
        try:
            p = pos
            n_fp, p = _varint(data, p)
            fp_at = p
            p += n_fp
            n_pr, p = _varint(data, p)
            pr_at = p
            p += n_pr
            head = p
            _, p = _varint(data, p)
            nb = p - head
            _, p = _varint(data, p)
            ns = p - head - nb
            w, p = _varint(data, p)
            npl = p - head - nb - ns
            if min(n_fp, n_pr, w) < 0 or p + w > len(data) or max(nb, ns) > 9:
                return False
            fp = data[fp_at:fp_at + n_fp].decode("utf-8")
            proto = data[pr_at:pr_at + n_pr].decode("utf-8")
        except (IndexError, ValueError):
            return False
        length = p + w - pos
        hdr = head - pos                      # string bytes: [0, hdr)
        wc = hdr + nb + ns                    # payload-length varint: [wc, wc + npl)
        t_hdr, t_w = d[pos:pos + hdr], d[pos + wc:pos + wc + npl]
        m_rows = min(count - done, (len(data) - pos) // length)
        run = 0
        while run < m_rows:  # extend the run chunk by chunk; stop at the first misfit row
            k = min(_RUN_CHUNK, m_rows - run)
            start = pos + run * length
            m = d[start:start + k * length].reshape(k, length)
            if ((m[:, :hdr] == t_hdr).all() and (m[:, wc:wc + npl] == t_w).all()
                    and _varint_ok(m, hdr, nb).all() and _varint_ok(m, hdr + nb, ns).all()):
                run += k  # the common case: one verdict for the chunk, no per-row reduction
                continue
            ok = _varint_ok(m, hdr, nb) & _varint_ok(m, hdr + nb, ns)
            for i in range(hdr):
                ok &= m[:, i] == t_hdr[i]
            for i in range(npl):
                ok &= m[:, wc + i] == t_w[i]
            run += int(np.argmin(ok)) if not ok.all() else k
            break
        if run == 0:
            return False
        m = d[pos:pos + run * length].reshape(run, length)
        pieces.append((fp, proto, _varint_values(m, hdr, nb), _varint_values(m, hdr + nb, ns),
                       w, m[:, length - w:]))
        pos += run * length
        done += run
    if pos != len(data):
        return False  # trailing bytes: not a well-formed block; let fastavro judge it
    for fp, proto, blocks, seeds, w, payload in pieces:
        k = len(blocks)
        b.add_columns(np.full(k, b.fp.code(fp), dtype=np.int32),
                      np.full(k, b.proto.code(proto), dtype=np.int32), blocks, seeds,
                      np.full(k, w, dtype=np.int64), payload.reshape(-1))
    return True


def _decode_records(data: bytes, count: int, header: _Header) -> list:
    """fastavro decoding of one block's records; raises unless exactly ``count`` fill the block."""
    bio = io.BytesIO(data)
    schema = header.parsed_schema
    records = [fastavro.schemaless_reader(bio, schema, None) for _ in range(count)]
    if bio.tell() != len(data):
        raise ValueError(f"{len(data) - bio.tell()} bytes left after {count} records")
    return records


def _unreadable(fo: BinaryIO, offset: int, stop: int | None, err: BaseException) -> Unreadable:
    try:
        fo.seek(offset)
        want = RAW_LIMIT if stop is None else min(RAW_LIMIT, stop - offset)
        raw = fo.read(want)
        more = (len(fo.read(1)) > 0) if stop is None else stop - offset > RAW_LIMIT
    except Exception:  # noqa: BLE001  (the stream itself is broken: keep what we know)
        raw, more = b"", False
    note = f" (first {RAW_LIMIT} bytes kept)" if more else ""
    upto = "the end of the file" if stop is None else f"the next sync marker at byte {stop}"
    return Unreadable(offset, raw, f"cannot decode from byte {offset} to {upto}: "
                                   f"{type(err).__name__}: {err}{note}")


def _file_size(fo: BinaryIO) -> int:
    fo.seek(0, io.SEEK_END)
    return fo.tell()


def read_avro_range(fo: BinaryIO, source: str, batch_rows: int, start: int = 0,
                    end: int | None = None) -> Iterator[ReportColumns]:
    """Column batches of at most ``batch_rows`` records of the blocks owned by ``[start, end)``.

    A block is owned by the range in which its preceding sync marker starts (the header's sync
    marker for the first block); an unreadable header is owned by the range holding byte 0.
    Never raises on bad content. ``fo`` must be seekable.
    """
    if batch_rows < 1:
        raise ValueError(f"read_avro_range: batch_rows must be >= 1, got {batch_rows}")
    size = _file_size(fo)
    end = size if end is None else min(end, size)
    builder = _Builder(source, 0, with_segments=True)
    try:
        header = _read_header(fo)
    except Exception as e:  # noqa: BLE001  (not Avro / broken header: the whole file is bad)
        if start <= 0 < max(end, 1):
            yield builder.flush(_unreadable(fo, 0, None, e))
        return
    marker = header.end - SYNC_SIZE
    if marker < start:
        marker = _find_sync(fo, header.sync, start, size)
    while marker is not None and marker < end:
        block_at = marker + SYNC_SIZE
        if block_at >= size:
            break  # the file ends with a sync marker: no more blocks
        try:
            fo.seek(block_at)
            head = fo.read(20)
            count, p = _varint(head, 0)
            nbytes, p = _varint(head, p)
            if count < 0 or nbytes < 0 or block_at + p + nbytes + SYNC_SIZE > size:
                raise EOFError(f"block at byte {block_at} declares {count} records in {nbytes} "
                               f"bytes, beyond the end of the file ({size} bytes)")
            fo.seek(block_at + p)
            raw = fo.read(nbytes + SYNC_SIZE)
            if raw[nbytes:] != header.sync:
                raise ValueError(f"block at byte {block_at} is not followed by the sync marker")
            data = _decompress(header.codec, raw[:nbytes])
            next_marker = block_at + p + nbytes
            builder.segment(block_at)
            if not (header.layout and _decode_layout_runs(data, count, builder)):
                builder.add_records(_decode_records(data, count, header), header.fast)
        except Exception as e:  # noqa: BLE001  (corrupt block: skip to the next sync marker)
            builder.drop_block(block_at)
            nxt = _find_sync(fo, header.sync, block_at, size)
            yield from builder.emit(batch_rows, final=True)
            yield builder.flush(_unreadable(fo, block_at, nxt, e))
            marker = nxt
            continue
        yield from builder.emit(batch_rows)
        marker = next_marker
    yield from builder.emit(batch_rows, final=True)


def read_report_columns(fo: BinaryIO, source: str, batch_rows: int) -> Iterator[ReportColumns]:
    """Column batches of at most ``batch_rows`` records from one whole seekable Avro stream."""
    if batch_rows < 1:
        raise ValueError(f"read_report_columns: batch_rows must be >= 1, got {batch_rows}")
    yield from read_avro_range(fo, source, batch_rows)


def encode_report(record: dict) -> bytes:
    """A report record encoded schemaless with ``report.avsc`` (for dead letters)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schemas.report_schema(), record)
    return buf.getvalue()
