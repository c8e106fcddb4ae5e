"""Avro object containers of reports (``report.avsc``): a vectorized writer and a reader of byte
ranges into :class:`ReportColumns` batches. Beam-free (numpy, fastavro).

**Reading.** Our own container-format reader, so that a file can be read in byte ranges: the range
``[start, end)`` owns every block whose preceding sync marker starts in it, and a reader of a later
range resynchronises on the first sync marker at or after ``start`` (as Beam's ``AvroSource``
does). Reading a file in any number of ranges therefore gives exactly the records of reading it
whole. Records of a block are decoded vectorized when the block is a run of records of one byte
layout (what ``privfreq encode`` writes: the five version-1 fields, then optionally ``round``
and/or ``attribute``, whose bytes are part of the layout; checked byte-exactly per record),
otherwise by
``fastavro`` record by record (which also reads the optional ``event_time`` field into
``ReportColumns.event_ms``). A block that cannot be decoded (truncated, corrupt, unsupported codec)
is salvaged: its records are decoded in order until the damage (null codec as stored; deflate
through a streaming inflater; other codecs not at all), each record only from bytes that hold it
whole. The records it declares but that were not recovered are one ``unreadable`` region counting
them (``TRUNCATED_RECORDS`` when the block runs past the end of a cut file, else
``CORRUPT_RECORDS``), with the bytes from the block up to the next sync marker (or the end of
the file); reading resumes at that sync marker, so a corrupt block in the middle of a file loses
at most its own records. A file whose header is unreadable (not Avro at all), or a block whose
header is, is one ``UNREADABLE_FILE`` region counting one report (its count is unknown).

**Writing.** :func:`write_avro_reports`: the header from fastavro (schema, codec, random sync
marker), the blocks assembled with numpy from ``(block, seeds, payloads)`` pieces, blocks of about
:data:`AVRO_BLOCK_BYTES`; every record may also carry a ``round`` and, for a protocol with
attributes, its ``attribute`` with the inner block in ``block`` (``wire_blocks``). Any Avro reader
reads the file.
"""
from __future__ import annotations

import io
import json
import zlib
from typing import BinaryIO, Iterable, Iterator

import fastavro
import numpy as np

from privfreq import schemas
from privfreq.schemas.columns import NO_ATTRIBUTE, RAW_LIMIT, Builder, ReportColumns, Unreadable

__all__ = ["AVRO_BLOCK_BYTES", "AVRO_MAGIC", "MIN_RECORD_BYTES", "REPORT_FIELDS", "decode_report_record",
           "encode_report", "fast_path_ok", "read_avro_range", "write_avro_reports",
           "zigzag_varints"]

# Avro blocks of about 1 MiB: the reader's fixed cost per block (~30 numpy calls, ~0.1 ms) is then
# a few % of decoding its ~4e4 GRR records, while a block stays far below the 16 MiB split size, so
# splits stay even (and a corrupt block loses at most ~1 MiB of reports).
AVRO_BLOCK_BYTES = 1 << 20

# Report field -> the Avro primitive types of a writer schema we can read on the fast path.
REPORT_FIELDS = {
    "config_fingerprint": ("string",),
    "protocol": ("string",),
    "block": ("int", "long"),
    "seed": ("int", "long"),
    "payload": ("bytes",),
}
_FIELD_ORDER = tuple(REPORT_FIELDS)
AVRO_MAGIC = b"Obj\x01"
SYNC_SIZE = 16
# Rows checked per step of the vectorized layout run (bounds the work wasted on a run that ends).
_RUN_CHUNK = 1 << 16
# A block whose layout runs are shorter than this on average is decoded by fastavro instead.
_MIN_RUN = 8


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


# The optional fields that may follow the report fields in a vectorized layout (report.avsc
# order), each a union of null and one integer type, either branch first.
_TAIL_FIELDS = schemas.REPORT_TAIL_FIELDS
_TAIL_UNIONS = tuple([a, b] for t in ("long", "int") for a, b in (("null", t), (t, "null")))


def _layout_ok(writer_schema: dict) -> tuple | None:
    """The layout's tail when the writer schema decodes vectorized: the report fields in order,
    then any of ``round``, ``attribute`` (in that order), each ``["null", "long"|"int"]`` (either
    branch first) -- what the batch writers write. The tail is ``((name, union), ...)``, ``()``
    for the version-1 fields alone; None when the schema is anything else (fastavro decodes it)."""
    if not fast_path_ok(writer_schema):
        return None
    fields = writer_schema["fields"]
    names = tuple(f["name"] for f in fields)
    if names[:len(_FIELD_ORDER)] != _FIELD_ORDER:
        return None
    tail = fields[len(_FIELD_ORDER):]
    tail_names = tuple(f["name"] for f in tail)
    if tail_names not in ((), ("round",), ("attribute",), _TAIL_FIELDS):
        return None
    if any(f["type"] not in _TAIL_UNIONS for f in tail):
        return None
    return tuple((f["name"], list(f["type"])) for f in tail)

# ----- varints (zigzag longs) --------------------------------------------------------------------
def zigzag_varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _varint_bytes(value: int) -> bytes:
    raw, n = zigzag_varints(np.array([value], dtype=np.int64))
    return raw[0, :n[0]].tobytes()



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
        self.layout = _layout_ok(self.writer_schema)  # tail fields, or None: fastavro decodes
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


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _decode_layout_runs(data: bytes, count: int, b: Builder, tail: tuple = ()) -> bool:
    """Decode a block's records as runs of one byte layout, vectorized; False (builder untouched)
    when the block is not made of such runs (then fastavro decodes it).

    A run's template is its first record, decoded scalar: field offsets, varint widths, the bytes
    of the two strings and of the payload length. A following row of the same length belongs to
    the run iff its string and payload-length bytes equal the template's and its block and seed
    bytes are each one varint of the template's width -- then, by the Avro grammar, it is exactly
    one record of that length, so the run's records start every ``length`` bytes.
    ``tail``: the optional fields after ``payload`` (``_layout_ok``), ``((name, union
    branches), ...)``; their bytes belong to the template too (one round and one attribute per
    run).
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
            tail_at = q = p + w
            extra = {}  # tail field -> its value in this run (absent: null)
            for name, union in tail:
                branch, q = _varint(data, q)
                if branch not in (0, 1):
                    return False
                if union[branch] != "null":
                    v, q = _varint(data, q)
                    if not _INT64_MIN <= v <= _INT64_MAX or (
                            name == "attribute" and v == NO_ATTRIBUTE):
                        return False  # not an int64 (or the null marker): fastavro judges it
                    extra[name] = v
            n_tail = q - tail_at
        except (IndexError, ValueError):
            return False
        length = tail_at + n_tail - pos
        hdr = head - pos                      # string bytes: [0, hdr)
        wc = hdr + nb + ns                    # payload-length varint: [wc, wc + npl)
        t_hdr, t_w = d[pos:pos + hdr], d[pos + wc:pos + wc + npl]
        wt = length - n_tail                  # the round's bytes: [wt, length)
        t_tail = d[pos + wt:pos + length]
        m_rows = min(count - done, (len(data) - pos) // length)
        run = 0
        while run < m_rows:  # extend the run chunk by chunk; stop at the first misfit row
            k = min(_RUN_CHUNK, m_rows - run)
            start = pos + run * length
            m = d[start:start + k * length].reshape(k, length)
            if ((m[:, :hdr] == t_hdr).all() and (m[:, wc:wc + npl] == t_w).all()
                    and (not n_tail or (m[:, wt:] == t_tail).all())
                    and _varint_ok(m, hdr, nb).all() and _varint_ok(m, hdr + nb, ns).all()):
                run += k  # the common case: one verdict for the chunk, no per-row reduction
                continue
            ok = _varint_ok(m, hdr, nb) & _varint_ok(m, hdr + nb, ns)
            for i in range(hdr):
                ok &= m[:, i] == t_hdr[i]
            for i in range(npl):
                ok &= m[:, wc + i] == t_w[i]
            for i in range(n_tail):
                ok &= m[:, wt + i] == t_tail[i]
            run += int(np.argmin(ok)) if not ok.all() else k
            break
        if run == 0:
            return False
        m = d[pos:pos + run * length].reshape(run, length)
        pieces.append((fp, proto, _varint_values(m, hdr, nb), _varint_values(m, hdr + nb, ns),
                       w, m[:, wt - w:wt], extra))
        pos += run * length
        done += run
    if pos != len(data):
        return False  # trailing bytes: not a well-formed block; let fastavro judge it
    for fp, proto, blocks, seeds, w, payload, extra in pieces:
        k = len(blocks)
        rnd, attr = extra.get("round"), extra.get("attribute")
        b.add_columns(np.full(k, b.fp.code(fp), dtype=np.int32),
                      np.full(k, b.proto.code(proto), dtype=np.int32), blocks, seeds,
                      np.full(k, w, dtype=np.int64), payload.reshape(-1),
                      round_=None if rnd is None else np.full(k, rnd, dtype=np.int64),
                      attribute=None if attr is None else np.full(k, attr, dtype=np.int64))
    return True


def _decode_records(data: bytes, count: int, header: _Header) -> list:
    """fastavro decoding of one block's records; raises unless exactly ``count`` fill the block."""
    bio = io.BytesIO(data)
    schema = header.parsed_schema
    records = [fastavro.schemaless_reader(bio, schema, None) for _ in range(count)]
    if bio.tell() != len(data):
        raise ValueError(f"{len(data) - bio.tell()} bytes left after {count} records")
    return records


def _unreadable(fo: BinaryIO, offset: int, stop: int | None, err: BaseException | str,
                n_reports: int = 1, reason: str = "UNREADABLE_FILE") -> Unreadable:
    try:
        fo.seek(offset)
        want = RAW_LIMIT if stop is None else min(RAW_LIMIT, stop - offset)
        raw = fo.read(want)
        more = (len(fo.read(1)) > 0) if stop is None else stop - offset > RAW_LIMIT
    except Exception:  # noqa: BLE001  (the stream itself is broken: keep what we know)
        raw, more = b"", False
    note = f" (first {RAW_LIMIT} bytes kept)" if more else ""
    upto = "the end of the file" if stop is None else f"the next sync marker at byte {stop}"
    why = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return Unreadable(offset, raw, f"cannot decode from byte {offset} to {upto}: {why}{note}",
                      n_reports, reason)


def _file_size(fo: BinaryIO) -> int:
    fo.seek(0, io.SEEK_END)
    return fo.tell()


class _Exact(io.BytesIO):
    """A byte stream whose reads raise ``EOFError`` instead of returning short (so a record cut
    by the end of the data is never decoded from the bytes that remain)."""

    def read(self, n=-1):
        out = super().read(n)
        if n is not None and n >= 0 and len(out) < n:
            raise EOFError(f"record needs {n} bytes, {len(out)} remain")
        return out


# Inflate a damaged deflate block this many compressed bytes at a time: a zlib error loses the
# output of its own chunk only, so salvage stops at most ~64 compressed bytes before the damage.
_INFLATE_CHUNK = 64
# Fewest bytes one report record takes (five fields, each at least one byte): a block declaring
# more records than its bytes could hold has a corrupt count, which is then not trusted.
MIN_RECORD_BYTES = 5
# Deflate expands at most ~1032:1, which bounds the records a compressed block can hold.
_DEFLATE_MAX_RATIO = 1032


def _inflate_prefix(raw: bytes) -> tuple[bytes, str | None]:
    """The bytes a streaming inflater yields from ``raw`` before any error, and the error."""
    d = zlib.decompressobj(-15)
    out = []
    for i in range(0, len(raw), _INFLATE_CHUNK):
        try:
            out.append(d.decompress(raw[i:i + _INFLATE_CHUNK]))
        except zlib.error as e:
            return b"".join(out), f"deflate stream broken near compressed byte {i}: {e}"
    return b"".join(out), None if d.eof else "deflate stream incomplete"


def _salvage_block(fo: BinaryIO, header: _Header, builder: Builder, block_at: int,
                   size: int, nxt: int | None, err: BaseException) -> Unreadable:
    """Records of a damaged block decoded in order up to the damage (null codec, or deflate
    through a streaming inflater) into ``builder``; the region's :class:`Unreadable` counts the
    declared records not recovered (``TRUNCATED_RECORDS`` when no sync marker follows and the
    block runs past the end of the file, else ``CORRUPT_RECORDS``; ``UNREADABLE_FILE``, counting
    1, when the block header itself is unreadable)."""
    fo.seek(block_at)
    head = fo.read(20)
    try:
        count, p = _varint(head, 0)
    except (IndexError, ValueError):
        count, p = None, 0
    try:
        nbytes, p = _varint(head, p) if count is not None else (None, p)
    except (IndexError, ValueError):
        nbytes = None
    stop = nxt if nxt is not None else size
    cut = nxt is None and (nbytes is None or block_at + p + nbytes + SYNC_SIZE > size)
    reason = "TRUNCATED_RECORDS" if cut else "CORRUPT_RECORDS"
    if count is None or count < 0:
        return _unreadable(fo, block_at, nxt, f"block header unreadable ({err}); record count "
                                              f"unknown, counted as 1")
    data_end = stop if nbytes is None or nbytes < 0 else min(block_at + p + nbytes, stop)
    # The count is checked against the block's declared size, else (size varint unreadable) the
    # bytes up to the next sync marker; a cut inside the size varint leaves nothing to check.
    room = nbytes if nbytes is not None and nbytes >= 0 else (None if cut else stop - block_at)
    ratio = _DEFLATE_MAX_RATIO if header.codec == "deflate" else 1
    if room is not None and count * MIN_RECORD_BYTES > room * ratio:
        return _unreadable(fo, block_at, nxt, f"block declares {count} records, more than its "
                                              f"bytes can hold: count not trusted, counted as 1 "
                                              f"({err})")
    fo.seek(block_at + p)
    raw = fo.read(max(0, data_end - block_at - p))
    why = f"{type(err).__name__}: {err}"
    if header.codec == "null":
        data = raw
    elif header.codec == "deflate":
        data, broken = _inflate_prefix(raw)
        why += f"; {broken}" if broken else ""
    else:
        data = b""
        why += f"; codec {header.codec!r} cannot be salvaged"
    records = []
    bio = _Exact(data)
    while len(records) < count:
        try:
            records.append(fastavro.schemaless_reader(bio, header.parsed_schema, None))
        except Exception:  # noqa: BLE001  (the damage: stop here)
            break
    if records:
        builder.segment(block_at)
        builder.add_records(records, header.fast)
    lost = count - len(records)
    return _unreadable(fo, block_at, nxt, f"block declares {count} records, {len(records)} "
                                          f"salvaged, {lost} lost ({why})", lost, reason)


def read_avro_range(fo: BinaryIO, source: str, batch_rows: int, start: int = 0,
                    end: int | None = None) -> Iterator[ReportColumns]:
    """Column batches of at most ``batch_rows`` records of the blocks owned by ``[start, end)``.

    A block is owned by the range in which its preceding sync marker starts (the header's sync
    marker for the first block); an unreadable header is owned by the range holding byte 0.
    A damaged block yields the records before its damage (:func:`_salvage_block`) and one
    unreadable region counting the rest. Never raises on bad content. ``fo`` must be seekable.
    """
    if batch_rows < 1:
        raise ValueError(f"read_avro_range: batch_rows must be >= 1, got {batch_rows}")
    size = _file_size(fo)
    end = size if end is None else min(end, size)
    builder = Builder(source, 0, with_segments=True)
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
            if not (header.layout is not None and _decode_layout_runs(data, count, builder,
                                                                      header.layout)):
                builder.add_records(_decode_records(data, count, header), header.fast)
        except Exception as e:  # noqa: BLE001  (damaged block: salvage, skip to the next marker)
            builder.drop_block(block_at)
            nxt = _find_sync(fo, header.sync, block_at, size)
            lost = _salvage_block(fo, header, builder, block_at, size, nxt, e)
            yield from builder.emit(batch_rows)
            yield builder.flush(lost)
            marker = nxt
            continue
        yield from builder.emit(batch_rows)
        marker = next_marker
    yield from builder.emit(batch_rows, final=True)


def encode_report(record: dict) -> bytes:
    """A report record encoded schemaless (for dead letters): the version-1 fields
    (``schemas.report_schema()``), followed by ``attribute`` when the record has a non-null one
    (``schemas.report_schema_with(attribute=True)``); other optional fields are not kept."""
    buf = io.BytesIO()
    schema = schemas.report_schema() if record.get("attribute") is None else \
        schemas.report_schema_with(attribute=True)
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def decode_report_record(data: bytes) -> dict:
    """One schemaless report record as :func:`encode_report` writes it: the version-1 fields
    (``schemas.report_schema()``), optionally followed by ``attribute``
    (``schemas.report_schema_with(attribute=True)``: the bytes after the version-1 fields tell
    which); ``ValueError`` when ``data`` is not exactly one such record."""
    bio = io.BytesIO(data)
    rec = fastavro.schemaless_reader(bio, schemas.report_schema(), None)
    if bio.tell() != len(data):
        left = len(data) - bio.tell()
        bio = io.BytesIO(data)
        try:
            rec = fastavro.schemaless_reader(bio, schemas.report_schema_with(attribute=True),
                                             None)
            exact = bio.tell() == len(data)
        except Exception:  # noqa: BLE001  (the rest is not an attribute)
            exact = False
        if not exact:
            raise ValueError(f"{left} bytes left after the record")
    return rec


# ----- writer ------------------------------------------------------------------------------------
def _avro_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _varint_bytes(len(data)) + data


def row_chunks(pieces: Iterable, row_bytes, target: int):
    """``(block, seeds, payloads)`` pieces cut into runs of at most ``target`` bytes
    (``row_bytes(width)`` per row)."""
    for j, seeds, payload in pieces:
        step = max(1, target // max(1, row_bytes(payload.shape[1])))
        for lo in range(0, len(seeds), step):
            yield j, seeds[lo:lo + step], payload[lo:lo + step]


def _avro_records(prefix: bytes, j: int, seeds: np.ndarray, payload: np.ndarray,
                  suffix: bytes = b"") -> bytes:
    """The report.avsc binary records of one piece, concatenated (vectorized); ``suffix``: the
    bytes of the fields after ``payload``, the same in every record."""
    n, width = payload.shape
    if suffix:
        payload = np.concatenate([payload, np.broadcast_to(
            np.frombuffer(suffix, np.uint8), (n, len(suffix)))], axis=1)
    head = prefix + _varint_bytes(j)
    tail = _varint_bytes(width)
    sv, slen = zigzag_varints(seeds)
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


def _union_branch(name: str) -> bytes:
    """The union-branch bytes of a non-null value of report.avsc's optional field ``name``."""
    field = next(f for f in schemas.load_json(schemas.REPORT)["fields"] if f["name"] == name)
    return _varint_bytes(next(i for i, t in enumerate(field["type"]) if t != "null"))


def _piece_wire(wire_blocks, j: int) -> tuple[int, int]:
    """``(attribute, inner block)`` of flat block ``j`` through a ``wire_blocks`` callable."""
    attr, inner = wire_blocks(np.array([j], dtype=np.int64))
    return int(np.asarray(attr).reshape(-1)[0]), int(np.asarray(inner).reshape(-1)[0])


def write_avro_reports(fo: BinaryIO, fingerprint: str, protocol_id: str, pieces: Iterable,
                       codec: str = "null", block_bytes: int = AVRO_BLOCK_BYTES,
                       round_: int | None = None, wire_blocks=None) -> int:
    """An Avro object container of report.avsc records from ``(block j, seeds int64[r],
    payloads uint8[r, width_j])`` pieces; returns the record count. Without ``round_`` and
    ``wire_blocks`` the version-1 fields. With ``round_``, every record also carries ``round =
    round_``. With ``wire_blocks`` (a protocol with attributes: ``protocol.wire_block``, flat
    blocks -> ``(attribute, inner block)`` arrays), ``j`` is the flat block and each record
    carries its ``attribute`` and, in ``block``, the inner block. Writer schema:
    ``schemas.report_schema_with(round_ given, wire_blocks given)``."""
    if codec not in ("null", "deflate"):
        raise ValueError(f"codec: must be 'null' or 'deflate', got {codec!r}")
    header = io.BytesIO()
    schema = schemas.report_schema_with(round_=round_ is not None,
                                        attribute=wire_blocks is not None)
    fastavro.writer(header, schema, [], codec=codec)
    head = header.getvalue()
    sync = head[-SYNC_SIZE:]
    fo.write(head)
    prefix = _avro_string(fingerprint) + _avro_string(protocol_id)
    pending: list[bytes] = []
    count = size = total = 0

    def flush():
        data = b"".join(pending)
        if codec == "deflate":
            c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            data = c.compress(data) + c.flush()
        fo.write(_varint_bytes(count) + _varint_bytes(len(data)) + data + sync)

    # the round as its union branch ("long") then its varint: a constant suffix of every record;
    # the attribute (union branch "int", then its varint) follows it, constant per piece
    suffix = b"" if round_ is None else _union_branch("round") + _varint_bytes(int(round_))
    attr_branch = _union_branch("attribute")
    wire: dict[int, tuple[int, bytes]] = {}  # flat block -> (inner block, attribute bytes)
    for j, seeds, payload in row_chunks(
            pieces, lambda w: len(prefix) + 14 + w + len(suffix) + 6 * (wire_blocks is not None),
            block_bytes):
        if not len(seeds):
            continue
        if wire_blocks is None:
            chunk = _avro_records(prefix, j, seeds, payload, suffix)
        else:
            if j not in wire:
                attr, inner = _piece_wire(wire_blocks, j)
                wire[j] = inner, attr_branch + _varint_bytes(attr)
            inner, attr_bytes = wire[j]
            chunk = _avro_records(prefix, inner, seeds, payload, suffix + attr_bytes)
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
