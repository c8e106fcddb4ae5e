"""Streaming: report sources stamped with event time, and event-time windowed estimates (fixed or
sliding windows, allowed lateness, accumulating panes) written pane by pane. Thin adapters:
reading is ``schemas.avro``/``schemas.parquet`` (the same readers as batch), counting and decoding
the protocol's (via CountReports).

Sources -> ``TimestampedValue(ReportColumns)``: :class:`PollFiles` (a polling file watcher for
in-process runners), :class:`ReadTimedReportFiles` (files, as batch ``aggregate`` reads them) and
:class:`DecodeMessages` (Pub/Sub or Kafka payloads: an Avro container of reports, or one schemaless
version-1 record). A report's event time is its ``event_time`` field when set (and
``use_event_time``), else the arrival time (file modification time, message timestamp). Reports
are grouped into buckets of :func:`bucket_ms`, so that each element lies in exactly the windows of
all its reports.

Input: ``PCollection[ReportBatch]`` whose elements carry event timestamps (e.g. the publish time of
a Pub/Sub message holding a batch of reports), optionally mixed with parse tallies (the ``stats``
dicts of ``transforms.parse``, stamped like the reports they count), so each window also knows how
many reports were read and rejected. Output: one dict per fired pane::

    {"window_start": float s, "window_end": float s, "timing": "EARLY"|"ON_TIME"|"LATE",
     "pane_index": int, "n": reports in the window so far, "estimate": Estimate,
     "counts": Counts, "stats": {"read", "accepted", "rejected": {reason: n}}}

Panes accumulate: a late pane's estimate covers every report of its window seen so far, so the
latest pane of a window is always its best estimate. Reports later than ``allowed_lateness`` after
the window's end are dropped by the runner (they never reach a count).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import time
import uuid
from typing import Any, Iterable, Iterator, Tuple, Union

import apache_beam as beam
import fastavro
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from privfreq import schemas
from privfreq.protocols import totals as totals_lib
from privfreq.protocols.base import Counts, ReportBatch
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.totals import InputFile
from privfreq.schemas.avro import AVRO_MAGIC, decode_report_record, read_avro_range
from privfreq.schemas.columns import NO_EVENT_TIME, RAW_LIMIT, ReportColumns
from privfreq.schemas.files import file_digest
from privfreq.transforms import outputs
from privfreq.transforms.estimate import CountReports, decode_counts
from privfreq.transforms.io import open_file, read_range, split_ranges
from privfreq.transforms.parse import empty_stats, merge_stats

__all__ = ["CountReportsAndStats", "DecodeMessages", "INPUTS", "PollFiles", "ReadTimedReportFiles",
           "WINDOWS", "load_seen_inputs", "WindowedEstimates", "WritePane", "bucket_ms", "check_windows",
           "window_dir_name", "write_dead_letter_file"]

WINDOWS = "windows"
# Below this a message timestamp is Beam's MIN_TIMESTAMP: the message carries no time.
_MIN_MICROS = -(1 << 62)


# ----- event time ---------------------------------------------------------------------------------
def bucket_ms(window_seconds: float, period_seconds: float | None) -> int:
    """Granularity (ms) at which reports are grouped: every report of a bucket ``[b, b + g)``
    lies in exactly the same fixed/sliding windows (their starts and ends are multiples of g)."""
    w = int(round(window_seconds * 1000))
    if period_seconds is None:
        return max(w, 1)
    return max(math.gcd(w, int(round(period_seconds * 1000))), 1)


def _stamped(batches: Iterable[ReportColumns], fallback_ms: int, granularity_ms: int,
             use_event_time: bool) -> Iterator[TimestampedValue]:
    """Each batch cut into runs of rows of one event-time bucket, stamped with its start; an
    unreadable remainder stays with the batch's last run."""
    for cols in batches:
        ms = np.full(len(cols), fallback_ms, dtype=np.int64)
        if use_event_time and cols.event_ms is not None:
            ms = np.where(cols.event_ms == NO_EVENT_TIME, ms, cols.event_ms)
        keys = ms - ms % granularity_ms
        cuts = (np.flatnonzero(np.diff(keys)) + 1).tolist()
        if not cuts:  # one bucket, or no rows (only an unreadable remainder)
            key = int(keys[0]) if len(keys) else fallback_ms - fallback_ms % granularity_ms
            yield TimestampedValue(cols, Timestamp(micros=key * 1000))
            continue
        bounds = [0, *cuts, len(cols)]
        for lo, hi in zip(bounds, bounds[1:]):
            part = cols.slice(lo, hi)
            if hi == len(cols) and cols.unreadable is not None:
                part = part.with_unreadable(cols.unreadable)
            yield TimestampedValue(part, Timestamp(micros=int(keys[lo]) * 1000))


class ReadTimedReportFiles(beam.DoFn):
    """FileMetadata -> TimestampedValue(ReportColumns): whole files (Avro or Parquet, read as batch
    ``aggregate`` reads them), stamped with the event-time bucket of their reports (the file's
    modification time where a report has none)."""

    def __init__(self, batch_rows: int, granularity_ms: int, use_event_time: bool = True):
        self._batch_rows = batch_rows
        self._granularity_ms = granularity_ms
        self._use_event_time = use_event_time

    def process(self, metadata) -> Iterator[TimestampedValue]:
        path = metadata.path
        mtime = getattr(metadata, "last_updated_in_seconds", None) or time.time()
        with open_file(path) as fo:
            for file_range in split_ranges(fo, path, metadata.size_in_bytes):
                yield from _stamped(read_range(fo, file_range, self._batch_rows),
                                    int(round(mtime * 1000)), self._granularity_ms,
                                    self._use_event_time)


class DecodeMessages(beam.DoFn):
    """Message payload bytes -> TimestampedValue(ReportColumns). A payload is an Avro container
    of reports or one schemaless version-1 report record; the message timestamp is the arrival
    time (used where a report has no ``event_time``)."""

    def __init__(self, source_name: str, granularity_ms: int, batch_rows: int,
                 use_event_time: bool = True):
        self._source = source_name
        self._granularity_ms = granularity_ms
        self._batch_rows = batch_rows
        self._use_event_time = use_event_time

    def process(self, data: bytes, ts=beam.DoFn.TimestampParam) -> Iterator[TimestampedValue]:
        ms = int(ts.micros // 1000) if ts.micros > _MIN_MICROS else int(time.time() * 1000)
        source = f"{self._source}@{ms}"
        data = bytes(data)
        if data[:4] == AVRO_MAGIC:
            batches = read_avro_range(io.BytesIO(data), source, self._batch_rows)
        else:
            try:
                cols = ReportColumns.from_records([decode_report_record(data)], source)
            except Exception as e:  # noqa: BLE001  (not a report: one malformed row)
                cols = ReportColumns.from_records([None], source)
                cols.malformed[0] = (data[:RAW_LIMIT], f"message is neither an Avro container "
                                                       f"nor one report record: "
                                                       f"{type(e).__name__}: {e}")
            batches = [cols]
        yield from _stamped(batches, ms, self._granularity_ms, self._use_event_time)


# ----- inputs seen across restarts ----------------------------------------------------------------
INPUTS = "inputs"  # DIR/inputs/<digest>-<size>.json: one record per input content counted


def _input_record_path(state_dir: str, f: InputFile) -> str:
    return f"{state_dir.rstrip('/')}/{f.digest.split(':')[-1]}-{f.size}.json"


def load_seen_inputs(state_dir: str) -> dict[tuple[str, int], InputFile]:
    """The input contents recorded in ``state_dir`` by earlier runs (empty if none)."""
    try:
        found = FileSystems.match([f"{state_dir.rstrip('/')}/*.json"])[0].metadata_list
    except Exception:  # noqa: BLE001  (no directory yet: nothing seen)
        return {}
    seen = {}
    for md in found:
        with FileSystems.open(md.path) as f:
            rec = InputFile.from_dict(json.loads(f.read().decode("utf-8")))
        seen[rec.key] = rec
    return seen


class PollFiles(beam.DoFn):
    """pattern -> FileMetadata of each new matching file, polling every ``interval`` seconds until
    ``max_duration`` seconds have passed (then one last poll) or ``max_files`` files were found.

    With ``state_dir`` each new file is digested (``schemas.files``): a file whose content was
    already read, in this run or by an earlier run recorded in ``state_dir``, is skipped (logged,
    counter ``privfreq:skipped_seen_files``); a new content is recorded there
    (``<digest>-<size>.json``, written atomically) before the file is emitted.

    For in-process runners only: the loop holds one bundle open, which a distributed streaming
    runner would never commit (``fileio.MatchContinuously`` is used there)."""

    def __init__(self, interval: float, max_duration: float | None, max_files: int | None,
                 state_dir: str | None = None):
        self._interval = interval
        self._max_duration = max_duration
        self._max_files = max_files
        self._state_dir = state_dir

    def _new_content(self, md, contents: dict) -> bool:
        """True (and recorded) when ``md``'s content is new; False when it was seen."""
        f = InputFile(file_digest(lambda: open_file(md.path), md.size_in_bytes),
                      int(md.size_in_bytes), md.path)
        if f.key in contents:
            logging.warning("PollFiles: %s skipped: its content was already read as %s",
                            md.path, contents[f.key].path)
            Metrics.counter("privfreq", "skipped_seen_files").inc()
            return False
        contents[f.key] = f
        outputs.write_text_atomic(_input_record_path(self._state_dir, f), json.dumps(f.to_dict()))
        return True

    def process(self, pattern: str):
        contents = load_seen_inputs(self._state_dir) if self._state_dir else {}
        seen: set[str] = set()
        deadline = None if self._max_duration is None else time.monotonic() + self._max_duration
        while True:
            last = deadline is not None and time.monotonic() >= deadline
            try:
                found = FileSystems.match([pattern])[0].metadata_list
            except Exception as e:  # noqa: BLE001  (e.g. the directory does not exist yet)
                logging.debug("PollFiles: %s matched nothing: %s", pattern, e)
                found = []
            for md in sorted(found, key=lambda m: m.path):
                if md.path not in seen:
                    seen.add(md.path)
                    if self._state_dir is None or self._new_content(md, contents):
                        yield md
                    if self._max_files is not None and len(seen) >= self._max_files:
                        return
            if last:
                return
            wait = self._interval
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            time.sleep(wait)


@beam.typehints.with_input_types(Union[ReportBatch, dict])
@beam.typehints.with_output_types(Tuple[Counts, dict])
class CountReportsAndStats(beam.CombineFn):
    """ReportBatch and parse-tally dicts -> (merged Counts, summed tallies). The counting is
    CountReports' (the protocol's); tallies are summed with ``merge_stats``."""

    def __init__(self, config: CollectionConfig):
        self._counts = CountReports(config)

    def setup(self, *args, **kwargs):
        self._counts.setup()

    def create_accumulator(self):
        return self._counts.create_accumulator(), empty_stats()

    def add_input(self, acc, element):
        counts, stats = acc
        if isinstance(element, dict):
            return counts, merge_stats([stats, element])
        return self._counts.add_input(counts, element), stats

    def merge_accumulators(self, accumulators: Iterable):
        accs = list(accumulators)
        counts = self._counts.merge_accumulators([a[0] for a in accs])
        return counts, merge_stats([a[1] for a in accs])

    def extract_output(self, acc):
        return acc


def _pane_estimate(acc, config_json: str, w=beam.DoFn.WindowParam,
                   pane=beam.DoFn.PaneInfoParam) -> dict[str, Any]:
    counts, stats = acc
    timing = {0: "EARLY", 1: "ON_TIME", 2: "LATE"}.get(pane.timing, str(pane.timing))
    return {"window_start": float(w.start), "window_end": float(w.end), "timing": timing,
            "pane_index": int(pane.index), "n": counts.n, "counts": counts.copy(),
            "stats": stats, "estimate": decode_counts(counts.copy(), config_json)}


def check_windows(window_seconds: float, period_seconds: float | None,
                  allowed_lateness_seconds: float) -> None:
    """``ValueError`` naming the parameter unless the window parameters are valid."""
    if not window_seconds > 0:
        raise ValueError(f"WindowedEstimates: window_seconds must be > 0, got {window_seconds}")
    if period_seconds is not None and not 0 < period_seconds <= window_seconds:
        raise ValueError(f"WindowedEstimates: period_seconds must be in (0, window_seconds], "
                         f"got {period_seconds}")
    if not allowed_lateness_seconds >= 0:
        raise ValueError(f"WindowedEstimates: allowed_lateness_seconds must be >= 0, got "
                         f"{allowed_lateness_seconds}")


class WindowedEstimates(beam.PTransform):
    """PCollection[ReportBatch | stats dict] (timestamped) -> one estimate dict per window pane.

    Args:
        config: the collection config.
        window_seconds: window length.
        period_seconds: sliding period (``None``: fixed windows).
        allowed_lateness_seconds: how long after a window's end late reports still update it; each
            late arrival fires a new accumulating pane.
    """

    def __init__(self, config: CollectionConfig, window_seconds: float,
                 period_seconds: float | None = None, allowed_lateness_seconds: float = 0):
        super().__init__()
        check_windows(window_seconds, period_seconds, allowed_lateness_seconds)
        self._config = config
        self._windows = (window.FixedWindows(window_seconds) if period_seconds is None
                         else window.SlidingWindows(window_seconds, period_seconds))
        self._lateness = allowed_lateness_seconds

    def expand(self, batches):
        windowed = batches | "Window" >> beam.WindowInto(
            self._windows,
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=Duration.of(self._lateness))
        counts = windowed | "CountReports" >> beam.CombineGlobally(
            CountReportsAndStats(self._config)).without_defaults()
        # pcoll: one (Counts, stats) per window pane (accumulated over the window's panes)
        return counts | "Decode" >> beam.Map(_pane_estimate, self._config.to_json(indent=None))


# ----- outputs ------------------------------------------------------------------------------------
def _utc(seconds: float) -> str:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        milliseconds=round(seconds * 1000))
    return t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z"


def window_dir_name(start: float, end: float, pane_index: int) -> str:
    """``<start>-<end>-pane<N>`` with UTC ``YYYYmmddTHHMMSS.mmmZ`` times (sorts by time)."""
    return f"{_utc(start)}-{_utc(end)}-pane{pane_index}"


PANE_TOTALS = "totals.npz"  # a pane's merged counts (protocols.totals), for a restarted run


def _stats_of_summary(summary: dict) -> dict:
    return {"read": summary["n_read"], "accepted": summary["n_accepted"],
            "rejected": summary["rejected_by_reason"],
            "regions": summary.get("unreadable_regions", {})}


class WritePane(beam.DoFn):
    """A pane dict -> ``DIR/windows/<start>-<end>-pane<N>/`` (estimates.parquet, summary.json,
    totals.npz), written into a hidden staging directory and renamed into place; a re-fired
    (retried) pane replaces its directory whole.

    Panes continue across restarts: a run (``run_id``) whose window already has panes written by
    earlier runs adds the counts and tallies of the latest of them (its ``totals.npz``) to its own
    and numbers its panes after them, so the highest pane of a window still covers every report
    read for it. (With the watcher's ``state_dir``, files read before the restart are not read
    again, so nothing is counted twice.)"""

    def __init__(self, out_dir: str, config_json: str, run_id: str = ""):
        self._out = out_dir.rstrip("/")
        self._config_json = config_json
        self._run_id = run_id
        self._earlier: dict[str, tuple] = {}

    def _earlier_pane(self, prefix: str) -> tuple[int, Counts | None, dict | None]:
        """(next pane index, counts, stats) of the latest pane an earlier run wrote."""
        if prefix in self._earlier:
            return self._earlier[prefix]
        best = (-1, None)
        try:
            found = FileSystems.match([f"{prefix}*/{outputs.SUMMARY}"])[0].metadata_list
        except Exception:  # noqa: BLE001  (no windows yet)
            found = []
        for md in found:
            with FileSystems.open(md.path) as f:
                summary = json.loads(f.read().decode("utf-8"))
            if summary.get("window", {}).get("run_id") == self._run_id:
                continue
            index = int(summary["window"]["pane_index"])
            if index > best[0]:
                best = (index, md.path)
        result = (0, None, None)
        if best[1] is not None:
            pane_dir = best[1][:-len(outputs.SUMMARY) - 1]
            with FileSystems.open(best[1]) as f:
                stats = _stats_of_summary(json.loads(f.read().decode("utf-8")))
            with FileSystems.open(f"{pane_dir}/{PANE_TOTALS}") as f:
                counts = totals_lib.loads(f.read(), f"{pane_dir}/{PANE_TOTALS}").counts
            result = (best[0] + 1, counts, stats)
        self._earlier[prefix] = result
        return result

    def process(self, pane: dict) -> Iterator[str]:
        prefix = f"{self._out}/{WINDOWS}/" + window_dir_name(
            pane["window_start"], pane["window_end"], 0)[:-1]
        base, counts0, stats0 = self._earlier_pane(prefix)
        counts, stats, estimate = pane["counts"], pane["stats"], pane["estimate"]
        if counts0 is not None:
            counts = counts.copy().merge_in(counts0)
            stats = merge_stats([stats, stats0])
            estimate = decode_counts(counts.copy(), self._config_json)
        index = base + pane["pane_index"]
        name = window_dir_name(pane["window_start"], pane["window_end"], index)
        final = f"{self._out}/{WINDOWS}/{name}"
        tmp = outputs.staging_dir(final, hidden=True)
        window = {"window": {"start": pane["window_start"], "end": pane["window_end"],
                             "start_utc": _utc(pane["window_start"]),
                             "end_utc": _utc(pane["window_end"]),
                             "pane_index": index, "timing": pane["timing"],
                             "run_id": self._run_id,
                             "n_reports_earlier_runs": counts0.n if counts0 is not None else 0},
                  "n_reports_in_window": counts.n,
                  "n_block": counts.n_block.tolist()}
        try:
            config = CollectionConfig.from_json(self._config_json)
            outputs._write_bytes(f"{tmp}/{PANE_TOTALS}",
                                 totals_lib.dumps(totals_lib.Totals(config, counts.copy())))
            outputs.write_results(estimate, stats, config_json=self._config_json,
                                  out_dir=tmp, window=window, plot=False)
            outputs.commit_output(tmp, final)
        except BaseException:
            outputs.discard_output(tmp)
            raise
        yield final


def write_dead_letter_file(dead: list, out_dir: str) -> Iterator[str]:
    """One batch's dead letters -> ``DIR/dead_letters/<uuid>.avro`` (written atomically)."""
    if not dead:
        return
    buf = io.BytesIO()
    fastavro.writer(buf, schemas.dead_letter_schema(), dead)
    path = f"{out_dir.rstrip('/')}/{outputs.DEAD_LETTERS}/{uuid.uuid4().hex}.avro"
    outputs.write_bytes_atomic(path, buf.getvalue())
    yield path
