"""Vectorized validation of report column batches: valid ``ReportBatch``es and dead letters.

Every read report ends in exactly one place: accepted (in a ``ReportBatch`` on the main output) or
rejected (counted by reason; a dead letter on the ``invalid`` output), so ``accepted + rejected =
read`` per batch. A rejected record is one dead letter; an unreadable file region is one dead
letter (its raw bytes) that counts every report the region declares and lost
(``ReportColumns.unreadable``; ``stats["regions"]`` counts the regions).
Checks, in order, first failure wins: malformed record, fingerprint, protocol id, the attribute
(``ATTRIBUTE_OUT_OF_RANGE``: for a protocol whose reports name their attribute,
``protocol.wire_attributes`` = d > 0, a report without one or with one outside ``[0, d)``; for any
other protocol, a report with one), block range (for a protocol with attributes, ``block`` is the
inner block within the attribute, mapped to the protocol's flat block by ``protocol.flat_block``;
out of the attribute's range -> ``BLOCK_OUT_OF_RANGE``; every later check and the accepted
``ReportBatch`` use the flat block), seed range, payload length for the block, then
``protocol.decode_payloads`` (value range, duplicates, bitmap weight and padding), then the round
(``ROUND_OUT_OF_RANGE``: negative, or outside the run's ``rounds`` range when one is given; a
report without a round is never rejected for it).
With ``by_round`` the valid reports that carry a round are also emitted on the ``ROUNDS`` output as
``(round, ReportBatch)`` (one per round present in a batch), for per-round estimates.
"""

from typing import Any, Iterator

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from privfreq.protocols.base import Reason, ReportBatch
from privfreq.protocols.config import CollectionConfig
from privfreq.schemas.avro import encode_report
from privfreq.schemas.columns import NO_ATTRIBUTE, NO_ROUND, ReportColumns

__all__ = ["INVALID", "METRICS_NAMESPACE", "ROUNDS", "STATS", "ParseReports", "merge_stats",
           "parse_columns", "empty_stats", "round_batches"]

ROUNDS = "rounds"     # tag of the per-round output: (round, ReportBatch)

INVALID = "invalid"   # tag of the dead-letter output: one list of dead-letter dicts per batch
# tag of the per-batch tallies: {"read", "accepted", "rejected": {reason: reports},
# "regions": {reason: unreadable file regions}}
STATS = "stats"
METRICS_NAMESPACE = "privfreq"


def empty_stats() -> dict[str, Any]:
    return {"read": 0, "accepted": 0, "rejected": {}, "regions": {}}


def merge_stats(stats) -> dict[str, Any]:
    """Sum tallies (associative and commutative: usable as a CombineGlobally function)."""
    out = empty_stats()
    for s in stats:
        out["read"] += s["read"]
        out["accepted"] += s["accepted"]
        for key in ("rejected", "regions"):
            for name, n in s.get(key, {}).items():
                out[key][name] = out[key].get(name, 0) + n
    return out


def _dead_letter(raw: bytes, source: str, reason: int, message: str) -> dict[str, Any]:
    r = Reason(reason)
    return {"raw": raw, "source": source, "reason": r.name, "reason_code": int(r),
            "message": message}


def parse_columns(cols: ReportColumns, config: CollectionConfig,
                  rounds: tuple[int, int] | None = None, with_rounds: bool = False):
    """Validate one column batch: (valid batches, one per block; dead letters; tallies), and with
    ``with_rounds`` a fourth list: the int64 rounds of each valid batch's rows (``NO_ROUND``
    where none), or None per batch when the columns carry no round. ``rounds``: the inclusive
    ``(first, last)`` round of the run."""
    protocol = config.protocol
    n = len(cols)
    nb = protocol.n_blocks
    reason = np.zeros(n, dtype=np.int64)
    detail: dict[int, str] = {}

    def reject(mask: np.ndarray, why: Reason) -> None:
        reason[mask & (reason == Reason.OK)] = why

    if cols.malformed:
        reason[list(cols.malformed)] = Reason.MALFORMED_RECORD
    # The string fields are dictionary-encoded: compare the few distinct values once per batch,
    # then gather the verdict per row (no per-row string comparison).
    if len(cols.fp_values):
        reject(~(cols.fp_values == config.fingerprint).astype(bool)[cols.fp_codes],
               Reason.FINGERPRINT_MISMATCH)
    if len(cols.proto_values):
        reject(~(cols.proto_values == protocol.protocol_id).astype(bool)[cols.proto_codes],
               Reason.PROTOCOL_MISMATCH)
    block = cols.block
    attr = cols.attribute
    d = protocol.wire_attributes
    if d:  # the report names its attribute; block is the inner block within it
        if attr is None:
            reject(np.ones(n, dtype=bool), Reason.ATTRIBUTE_OUT_OF_RANGE)
            block = np.full(n, -1, dtype=np.int64)
        else:
            reject((attr < 0) | (attr >= d), Reason.ATTRIBUTE_OUT_OF_RANGE)
            block = np.asarray(protocol.flat_block(attr, block), dtype=np.int64)
    elif attr is not None:
        reject(attr != NO_ATTRIBUTE, Reason.ATTRIBUTE_OUT_OF_RANGE)
    in_range = (block >= 0) & (block < nb)
    reject(~in_range, Reason.BLOCK_OUT_OF_RANGE)
    max_seeds = protocol.block_max_seeds()
    reject((cols.seed < 0) | (cols.seed > max_seeds[np.where(in_range, block, 0)]),
           Reason.BAD_SEED)
    widths = _widths(protocol)
    offsets = cols.payload_offsets
    lengths = np.diff(offsets)
    expected = widths[np.where(in_range, block, 0)]
    reject(lengths != expected, Reason.BAD_LENGTH)
    rnd = cols.round
    if rnd is not None:
        has = rnd != NO_ROUND
        bad_round = has & (rnd < 0)
        if rounds is not None:
            bad_round |= has & ((rnd < rounds[0]) | (rnd > rounds[1]))
        reject(bad_round, Reason.ROUND_OUT_OF_RANGE)

    batches = []
    batch_rows = []
    ok_rows = np.flatnonzero(reason == Reason.OK)
    if nb > 1:  # accepted rows grouped by block in one stable sort (row order kept per block)
        ok_block = block[ok_rows]
        ok_rows = ok_rows[np.argsort(ok_block, kind="stable")]
        ends = np.cumsum(np.bincount(ok_block, minlength=nb))
        groups = np.split(ok_rows, ends[:-1])
    else:
        groups = [ok_rows]
    for j, rows in enumerate(groups):
        if not len(rows):
            continue
        raw = _payload_matrix(cols.payload_data, offsets, rows, int(widths[j]))
        values, why = protocol.decode_payloads(j, raw)
        why = np.asarray(why, dtype=np.int64)
        bad = why != Reason.OK
        if bad.any():
            reason[rows[bad]] = why[bad]
            for i, w in zip(rows[bad].tolist(), why[bad].tolist()):
                detail[i] = (f"decode_payloads({_block_name(protocol, j)}) rejected the payload: "
                             f"{Reason(w).name}")
            good = ~bad
            batches.append(ReportBatch(block[rows[good]], cols.seed[rows[good]], values[good]))
            batch_rows.append(rows[good])
        elif len(rows) == n:  # the whole batch is one block: no gathers
            batches.append(ReportBatch(block, cols.seed, values))
            batch_rows.append(None)
        else:
            batches.append(ReportBatch(block[rows], cols.seed[rows], values))
            batch_rows.append(rows)

    dead = []
    rejected: dict[str, int] = {}
    for i in np.nonzero(reason != Reason.OK)[0].tolist():
        r = int(reason[i])
        rejected[Reason(r).name] = rejected.get(Reason(r).name, 0) + 1
        source = cols.locate(i)
        if i in cols.malformed:
            raw, msg = cols.malformed[i]
            dead.append(_dead_letter(raw, source, r, msg))
            continue
        rec = cols.record(i)
        try:
            raw = encode_report(rec)
        except Exception:  # noqa: BLE001  (e.g. a block beyond Avro int: keep a readable form)
            raw = repr(rec).encode("utf-8", "replace")
        dead.append(_dead_letter(raw, source, r,
                                 detail.get(i) or _message(r, rec, config, widths, int(block[i]))))
    regions: dict[str, int] = {}
    if cols.unreadable is not None:  # one dead letter with the region's bytes, its reports counted
        u = cols.unreadable
        if u.n_reports:
            rejected[u.reason] = rejected.get(u.reason, 0) + u.n_reports
        regions[u.reason] = 1
        dead.append(_dead_letter(u.raw, f"{cols.source}@{u.offset}", Reason[u.reason],
                                 u.message))
    accepted = sum(len(b) for b in batches)
    stats = {"read": cols.n_read, "accepted": accepted, "rejected": rejected, "regions": regions}
    # internal invariant, not user-data validation
    assert accepted + sum(rejected.values()) == cols.n_read
    if not with_rounds:
        return batches, dead, stats
    batch_round = [None if rnd is None else (rnd if r is None else rnd[r]) for r in batch_rows]
    return batches, dead, stats, batch_round


def round_batches(batch: ReportBatch, rnd: np.ndarray | None) -> Iterator[tuple[int, ReportBatch]]:
    """``(round, rows of that round)`` for each round present (rows without one are skipped)."""
    if rnd is None or not len(rnd):
        return
    first, last = int(rnd.min()), int(rnd.max())
    if first == last:  # one round per file (what encode --round writes): no gathers
        if first != NO_ROUND:
            yield first, batch
        return
    for r in np.unique(rnd).tolist():
        if r != NO_ROUND:
            yield int(r), batch.take(rnd == r)


def _widths(protocol) -> np.ndarray:
    """Payload width per block (cached on the protocol object: one list per batch adds up)."""
    w = getattr(protocol, "_privfreq_widths", None)
    if w is None:
        w = np.array([protocol.payload_width(j) for j in range(protocol.n_blocks)], dtype=np.int64)
        try:
            object.__setattr__(protocol, "_privfreq_widths", w)
        except (AttributeError, TypeError):  # slotted protocol: recompute each time
            pass
    return w


def _payload_matrix(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray,
                    width: int) -> np.ndarray:
    """``uint8[len(rows), width]`` payloads of ``rows`` (every one exactly ``width`` bytes)."""
    start = int(offsets[rows[0]])
    if int(offsets[rows[-1]]) - start == (len(rows) - 1) * width and \
            int(rows[-1]) - int(rows[0]) == len(rows) - 1:  # consecutive rows: a view, no copy
        return data[start:start + len(rows) * width].reshape(len(rows), width)
    if width == 0:
        return np.zeros((len(rows), 0), dtype=np.uint8)
    # Rows of a zero-copy sliding-window view: one `width`-byte copy per row (128-byte MSS
    # payloads: 22 vs 148 ns/row for an int64 index per byte).
    return np.lib.stride_tricks.sliding_window_view(data, width)[offsets[rows]]


def _block_name(protocol, flat: int) -> str:
    """``block j``, or for a protocol with attributes ``attribute a ('name') block b``."""
    if not protocol.wire_attributes:
        return f"block {flat}"
    a, b = (int(np.asarray(x).reshape(-1)[0]) for x in protocol.wire_block(np.array([flat])))
    return f"{_attribute_name(protocol, a)} block {b}"


def _attribute_name(protocol, a: int) -> str:
    names = getattr(protocol, "attributes", ())
    return f"attribute {a} ({names[a]!r})" if 0 <= a < len(names) else f"attribute {a}"


def _message(r: int, rec: dict, config: CollectionConfig, widths: np.ndarray,
             flat: int) -> str:
    """Why row ``rec`` was rejected; ``flat``: its (flat) block, as checked."""
    protocol = config.protocol
    d = protocol.wire_attributes
    if r == Reason.FINGERPRINT_MISMATCH:
        return f"config_fingerprint {rec['config_fingerprint']!r} != {config.fingerprint!r}"
    if r == Reason.PROTOCOL_MISMATCH:
        return f"protocol {rec['protocol']!r} != {protocol.protocol_id!r}"
    if r == Reason.ATTRIBUTE_OUT_OF_RANGE:
        attr = rec.get("attribute")
        if not d:
            return (f"attribute {attr} given, but protocol {protocol.protocol_id!r} has no "
                    f"attributes (the field must be null)")
        if attr is None:
            return (f"attribute missing: a report of protocol {protocol.protocol_id!r} names "
                    f"one of its {d} attributes, in [0, {d})")
        return f"attribute {attr} outside [0, {d})"
    if r == Reason.BLOCK_OUT_OF_RANGE:
        if d:
            a = int(rec["attribute"])
            n_inner = int(np.count_nonzero(
                protocol.wire_block(np.arange(protocol.n_blocks))[0] == a))
            return f"block {rec['block']} outside [0, {n_inner}) of {_attribute_name(protocol, a)}"
        return f"block {rec['block']} outside [0, {protocol.n_blocks})"
    if r == Reason.BAD_SEED:
        return f"seed {rec['seed']} outside [0, {int(protocol.block_max_seeds()[flat]) + 1})"
    if r == Reason.BAD_LENGTH:
        return (f"payload of {len(rec['payload'])} bytes, {_block_name(protocol, flat)} expects "
                f"{int(widths[flat])}")
    return Reason(r).name


@beam.typehints.with_input_types(ReportColumns)
@beam.typehints.with_output_types(ReportBatch)
class ParseReports(beam.DoFn):
    """ReportColumns -> valid ``ReportBatch``es (main) + dead-letter lists (``INVALID``) + tallies
    (``STATS``). Counters ``privfreq:read/accepted/rejected`` and ``privfreq:rejected_<REASON>``."""

    def __init__(self, config: CollectionConfig, rounds: tuple[int, int] | None = None,
                 by_round: bool = False):
        self._config_json = config.to_json(indent=None)  # small to pickle; rebuilt in setup()
        self._config = None
        self._rounds = rounds
        self._by_round = by_round

    def setup(self):
        self._config = CollectionConfig.from_json(self._config_json)
        self._read = Metrics.counter(METRICS_NAMESPACE, "read")
        self._accepted = Metrics.counter(METRICS_NAMESPACE, "accepted")
        self._rejected = Metrics.counter(METRICS_NAMESPACE, "rejected")

    def process(self, cols: ReportColumns) -> Iterator:
        batches, dead, stats, batch_round = parse_columns(cols, self._config, self._rounds,
                                                          with_rounds=True)
        self._read.inc(stats["read"])
        self._accepted.inc(stats["accepted"])
        self._rejected.inc(stats["read"] - stats["accepted"])
        for name, n in stats["rejected"].items():
            Metrics.counter(METRICS_NAMESPACE, f"rejected_{name}").inc(n)
        yield from batches
        if self._by_round:
            for b, rnd in zip(batches, batch_round):
                for r, rb in round_batches(b, rnd):
                    yield pvalue.TaggedOutput(ROUNDS, (r, rb))
        if dead:
            yield pvalue.TaggedOutput(INVALID, dead)
        yield pvalue.TaggedOutput(STATS, stats)
