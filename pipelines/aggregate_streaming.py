"""Streaming aggregation: ``privfreq aggregate --streaming`` — estimates per event-time window.

Local, watching a directory (in-process FnApiRunner, offline)::

    privfreq aggregate --streaming --config config.json --input 'incoming/*.avro' --output out/live \\
        --window-seconds 3600 [--period-seconds 600] [--allowed-lateness-seconds 7200] \\
        [--poll-interval 10] [--max-duration 86400] [--max-files N]

Pub/Sub or Kafka on a streaming runner (Dataflow, Flink; flags pass through)::

    privfreq aggregate --streaming --config gs://b/config.json --source pubsub \\
        --pubsub-subscription projects/P/subscriptions/S --output gs://b/live --window-seconds 3600 \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp
    privfreq aggregate --streaming --config config.json --source kafka \\
        --kafka-bootstrap-servers broker:9092 --kafka-topic reports --output /data/live ...

Sources (every one feeds the same graph: parse -> dead letters | window -> count -> decode -> write):

* ``files`` (default): new files matching ``--input`` (Avro or Parquet, as in batch ``aggregate``)
  as they appear, each read once. Writers must make a file appear whole (write elsewhere, then
  rename into the pattern). On the in-process FnApiRunner the watcher is a polling DoFn
  (``--watcher poll``; that runner does not honour a splittable DoFn's resume delay, so Beam's
  ``MatchContinuously`` would poll in a tight loop); on other runners it is
  ``fileio.MatchContinuously``. ``--max-duration`` / ``--max-files`` end the watch (and the job).
* ``pubsub``: ``ReadFromPubSub`` of a topic or subscription (``--pubsub-timestamp-attribute``
  makes the publisher's event time the message timestamp and so the watermark).
* ``kafka``: ``ReadFromKafka`` (a cross-language transform: needs Java and the expansion service,
  ``--kafka-expansion-service``), record timestamps by create time.

A message (Pub/Sub, Kafka value) is either an Avro object container of reports (any writer schema
with the report fields; ``event_time`` used when present) or one schemaless record of the
version-1 report schema (``schemas.report_schema()``). Anything else is a dead letter.

Event time of a report (``--event-time report``, the default): its ``event_time`` field when set,
else the arrival time — the file's modification time, or the message timestamp (Pub/Sub publish
time or ``--pubsub-timestamp-attribute``; Kafka create time). ``--event-time arrival`` always uses
the arrival time. Reports are grouped into buckets of ``gcd(window, period)`` so that each output
element lies in exactly the windows of all its reports.

Outputs, each directory staged and renamed into place when its pane fires (``DIR`` itself is not
staged: a streaming job has no end at which to publish it)::

    DIR/windows/<start>-<end>-pane<N>/estimates.parquet   (item, estimate, stderr)
    DIR/windows/<start>-<end>-pane<N>/summary.json        (as batch, + window, n of the window)
    DIR/dead_letters/<uuid>.avro                          (one file per batch with rejects)

``<start>``/``<end>`` are UTC ``YYYYmmddTHHMMSS.mmmZ``. Panes accumulate: pane N of a window covers
every report of it seen so far, so the highest N is the best estimate (late panes come only from
reports within ``--allowed-lateness-seconds``; later ones are dropped by the runner). On a
streaming runner the file watcher's watermark follows the poll clock, so reports whose event time
is older than the allowed lateness when they arrive are dropped: back-fill old files with batch
``aggregate``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import math
import os
import time
import uuid
from typing import Iterator

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from privfreq import schemas
from privfreq.pipelines import common
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.avro_batches import (AVRO_MAGIC, RAW_LIMIT, ReportColumns, Unreadable,
                                     read_avro_range)
from privfreq.transforms.io import _open, split_ranges
from privfreq.transforms.parquet_batches import read_parquet_range
from privfreq.transforms.parse import INVALID, STATS, ParseReports
from privfreq.transforms.simulate import batch_rows
from privfreq.transforms.streaming import WindowedEstimates

__all__ = ["DecodeMessages", "PollFiles", "ReadTimedReportFiles", "WritePane", "build", "run",
           "window_dir_name"]

SOURCES = ("files", "pubsub", "kafka")
WATCHERS = ("auto", "poll", "match-continuously")
WINDOWS = "windows"
DEAD_LETTER_DIR = "dead_letters"
# Runners that execute in this process and ignore an SDF's resume delay: the file watcher polls in
# a plain DoFn there. (Both run a bounded job: windows fire when the watch ends.)
_LOCAL_RUNNERS = ("FnApiRunner", "BundleBasedDirectRunner", "DirectRunner", "SwitchingDirectRunner")


# ----- event time ----------------------------------------------------------------------------------
def bucket_ms(window_seconds: float, period_seconds: float | None) -> int:
    """Granularity (ms) at which reports are grouped: every report of a bucket ``[b, b + g)``
    lies in exactly the same fixed/sliding windows (their starts and ends are multiples of g)."""
    w = int(round(window_seconds * 1000))
    if period_seconds is None:
        return max(w, 1)
    return max(math.gcd(w, int(round(period_seconds * 1000))), 1)


def _event_ms(value, fallback_ms: int) -> int:
    if value is None:
        return fallback_ms
    if isinstance(value, dt.datetime):  # fastavro decodes timestamp-millis to aware datetimes
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(round(value.timestamp() * 1000))
    return int(value)


def _bucket_start(ms: int, granularity_ms: int) -> Timestamp:
    return Timestamp(micros=(ms - ms % granularity_ms) * 1000)


def _runs(keys: list[int]) -> Iterator[tuple[int, int]]:
    """Maximal runs ``[lo, hi)`` of equal consecutive keys."""
    lo = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[lo]:
            yield lo, i
            lo = i


def read_event_time_avro(fo, source: str, fallback_ms: int, granularity_ms: int,
                         use_field: bool = True) -> Iterator[TimestampedValue]:
    """Timestamped ReportColumns from one Avro container (file or message), per block and bucket.

    Rows keep their batch-reader location ``source@<block offset>#<record>``. A block that cannot
    be decoded ends the read with an unreadable remainder (a dead letter), as in batch."""
    offset = 0
    fallback_ts = _bucket_start(fallback_ms, granularity_ms)
    try:
        reader = fastavro.block_reader(fo)
        for block in reader:
            offset = block.offset
            records = list(block)
            keys = [_bucket_start(_event_ms(r.get("event_time") if use_field and
                                            isinstance(r, dict) else None, fallback_ms),
                                  granularity_ms).micros for r in records]
            for lo, hi in _runs(keys):
                cols = ReportColumns.from_records(records[lo:hi], f"{source}@{offset}", lo)
                yield TimestampedValue(cols, Timestamp(micros=keys[lo]))
            offset = block.offset + block.size
    except Exception as e:  # noqa: BLE001  (corrupt container: the rest is one dead letter)
        try:
            fo.seek(offset)
            raw = fo.read(RAW_LIMIT)
        except Exception:  # noqa: BLE001
            raw = b""
        bad = ReportColumns.from_records([], source).with_unreadable(Unreadable(
            offset, raw, f"cannot decode from byte {offset}: {type(e).__name__}: {e}"))
        yield TimestampedValue(bad, fallback_ts)


def _has_event_time(fo) -> bool:
    """Whether an Avro file's writer schema has an ``event_time`` field (False if unreadable)."""
    try:
        schema = fastavro.reader(fo).writer_schema
        return any(f.get("name") == "event_time" for f in schema.get("fields", []))
    except Exception:  # noqa: BLE001  (the batch reader reports the bad file)
        return False
    finally:
        fo.seek(0)


class ReadTimedReportFiles(beam.DoFn):
    """FileMetadata -> TimestampedValue(ReportColumns): whole files, stamped with the event-time
    bucket of their reports (the file's modification time where a report has none)."""

    def __init__(self, batch_rows: int, granularity_ms: int, use_event_time: bool = True):
        self._batch_rows = batch_rows
        self._granularity_ms = granularity_ms
        self._use_event_time = use_event_time

    def process(self, metadata) -> Iterator[TimestampedValue]:
        path = metadata.path
        mtime = getattr(metadata, "last_updated_in_seconds", None) or time.time()
        fallback_ms = int(round(mtime * 1000))
        with _open(path) as fo:
            if (self._use_event_time and not path.lower().endswith(".parquet")
                    and _has_event_time(fo)):
                yield from read_event_time_avro(fo, path, fallback_ms, self._granularity_ms)
                return
            ts = _bucket_start(fallback_ms, self._granularity_ms)
            for _, fmt, start, end in split_ranges(fo, path, metadata.size_in_bytes):
                reader = read_parquet_range if fmt == "parquet" else read_avro_range
                for cols in reader(fo, path, self._batch_rows, start, end):
                    yield TimestampedValue(cols, ts)


class DecodeMessages(beam.DoFn):
    """Message payload bytes -> TimestampedValue(ReportColumns). A payload is an Avro container
    of reports or one schemaless version-1 report record; the message timestamp is the arrival
    time (used where a report has no ``event_time``)."""

    def __init__(self, source_name: str, granularity_ms: int, use_event_time: bool = True):
        self._source = source_name
        self._granularity_ms = granularity_ms
        self._use_event_time = use_event_time

    def process(self, data: bytes, ts=beam.DoFn.TimestampParam) -> Iterator[TimestampedValue]:
        ms = int(ts.micros // 1000) if ts.micros > MIN_MICROS else int(time.time() * 1000)
        source = f"{self._source}@{ms}"
        data = bytes(data)
        if data[:4] == AVRO_MAGIC:
            yield from read_event_time_avro(io.BytesIO(data), source, ms, self._granularity_ms,
                                            self._use_event_time)
            return
        bio = io.BytesIO(data)
        try:
            rec = fastavro.schemaless_reader(bio, schemas.report_schema(), None)
            if bio.tell() != len(data):
                raise ValueError(f"{len(data) - bio.tell()} bytes left after the record")
            cols = ReportColumns.from_records([rec], source)
        except Exception as e:  # noqa: BLE001  (not a report: one malformed row)
            cols = ReportColumns.from_records([None], source)
            cols.malformed[0] = (data[:RAW_LIMIT], f"message is neither an Avro container nor "
                                                   f"one report record: {type(e).__name__}: {e}")
        yield TimestampedValue(cols, _bucket_start(ms, self._granularity_ms))


MIN_MICROS = -(1 << 62)  # below this a message timestamp is Beam's MIN_TIMESTAMP (none set)


class PollFiles(beam.DoFn):
    """pattern -> FileMetadata of each new matching file, polling every ``interval`` seconds until
    ``max_duration`` seconds have passed (then one last poll) or ``max_files`` files were found.

    For in-process runners only: the loop holds one bundle open, which a distributed streaming
    runner would never commit (``fileio.MatchContinuously`` is used there)."""

    def __init__(self, interval: float, max_duration: float | None, max_files: int | None):
        self._interval = interval
        self._max_duration = max_duration
        self._max_files = max_files

    def process(self, pattern: str):
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
                    yield md
                    if self._max_files is not None and len(seen) >= self._max_files:
                        return
            if last:
                return
            wait = self._interval
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            time.sleep(wait)


# ----- outputs -------------------------------------------------------------------------------------
def _utc(seconds: float) -> str:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        milliseconds=round(seconds * 1000))
    return t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z"


def window_dir_name(start: float, end: float, pane_index: int) -> str:
    """``<start>-<end>-pane<N>`` with UTC ``YYYYmmddTHHMMSS.mmmZ`` times (sorts by time)."""
    return f"{_utc(start)}-{_utc(end)}-pane{pane_index}"


def _local(path: str) -> bool:
    return "://" not in path


class WritePane(beam.DoFn):
    """A pane dict -> ``DIR/windows/<start>-<end>-pane<N>/`` (estimates.parquet, summary.json),
    written into a hidden staging directory and renamed into place; a re-fired (retried) pane
    replaces its directory whole."""

    def __init__(self, out_dir: str, config_json: str):
        self._out = out_dir.rstrip("/")
        self._config_json = config_json

    def process(self, pane: dict) -> Iterator[str]:
        name = window_dir_name(pane["window_start"], pane["window_end"], pane["pane_index"])
        parent = f"{self._out}/{WINDOWS}"
        final = f"{parent}/{name}"
        tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        if _local(tmp):
            os.makedirs(tmp)
        window = {"start": pane["window_start"], "end": pane["window_end"],
                  "start_utc": _utc(pane["window_start"]), "end_utc": _utc(pane["window_end"]),
                  "pane_index": pane["pane_index"], "timing": pane["timing"]}
        try:
            common.write_results(pane["estimate"], pane["stats"], None,
                                 config_json=self._config_json, out_dir=tmp,
                                 extra={"window": window, "n_reports_in_window": pane["n"],
                                        "n_block": pane["counts"].n_block.tolist()})
            common.commit_output(tmp, final)
        except BaseException:
            common.discard_output(tmp)
            raise
        yield final


def _write_dead_letters(dead: list, out_dir: str) -> Iterator[str]:
    """One batch's dead letters -> ``DIR/dead_letters/<uuid>.avro`` (temp name, then rename)."""
    if not dead:
        return
    buf = io.BytesIO()
    fastavro.writer(buf, schemas.dead_letter_schema(), dead)
    path = f"{out_dir.rstrip('/')}/{DEAD_LETTER_DIR}/{uuid.uuid4().hex}.avro"
    common.write_bytes_atomic(path, buf.getvalue())
    yield path


# ----- graph ---------------------------------------------------------------------------------------
def build_source(p: beam.Pipeline, args, granularity_ms: int, config: CollectionConfig,
                 watcher: str):
    """The chosen source -> PCollection[ReportColumns] stamped with event-time buckets."""
    use_field = args.event_time == "report"
    if args.source == "files":
        if watcher == "poll":
            files = (p | "Pattern" >> beam.Create([args.input])
                     | "PollFiles" >> beam.ParDo(PollFiles(args.poll_interval, args.max_duration,
                                                           args.max_files)))
        else:
            now = Timestamp.now()
            stop = MAX_TIMESTAMP if args.max_duration is None else now + args.max_duration
            files = p | "MatchContinuously" >> fileio.MatchContinuously(
                args.input, interval=args.poll_interval, start_timestamp=now,
                stop_timestamp=stop)
        return files | "ReadFiles" >> beam.ParDo(ReadTimedReportFiles(
            batch_rows(config), granularity_ms, use_field))
    if args.source == "pubsub":
        from apache_beam.io.gcp.pubsub import ReadFromPubSub
        messages = p | "ReadPubSub" >> ReadFromPubSub(
            topic=args.pubsub_topic, subscription=args.pubsub_subscription,
            timestamp_attribute=args.pubsub_timestamp_attribute)
        name = args.pubsub_subscription or args.pubsub_topic
    else:
        messages = (p | "ReadKafka" >> kafka_read(args)
                    | "KafkaValues" >> beam.Map(lambda kv: kv[1]))
        name = "kafka:" + ",".join(args.kafka_topic)
    return messages | "DecodeMessages" >> beam.ParDo(
        DecodeMessages(name, granularity_ms, use_field))


def kafka_read(args):
    """The ReadFromKafka transform of the ``--kafka-*`` flags (record timestamps: create time)."""
    from apache_beam.io.kafka import ReadFromKafka
    consumer = {"bootstrap.servers": args.kafka_bootstrap_servers}
    if args.kafka_group_id:
        consumer["group.id"] = args.kafka_group_id
    for kv in args.kafka_consumer_config:
        key, _, value = kv.partition("=")
        consumer[key] = value
    kw = {}
    if args.kafka_expansion_service:
        kw["expansion_service"] = args.kafka_expansion_service
    return ReadFromKafka(consumer_config=consumer, topics=list(args.kafka_topic),
                         timestamp_policy=ReadFromKafka.create_time_policy, **kw)


def build(p: beam.Pipeline, config: CollectionConfig, args, watcher: str = "poll") -> None:
    """Attach the streaming graph to ``p`` (``args``: the parsed streaming flags)."""
    granularity = bucket_ms(args.window_seconds, args.period_seconds)
    cols = build_source(p, args, granularity, config, watcher)
    # pcoll: TimestampedValue(ReportColumns) at the bucket start of its reports' event time
    parsed = cols | "Parse" >> beam.ParDo(ParseReports(config)).with_outputs(
        INVALID, STATS, main="valid")
    _ = parsed[INVALID] | "DeadLetters" >> beam.FlatMap(_write_dead_letters, args.output)
    panes = ((parsed.valid, parsed[STATS]) | "ReportsAndStats" >> beam.Flatten()
             | "Windows" >> WindowedEstimates(config, args.window_seconds, args.period_seconds,
                                              args.allowed_lateness_seconds))
    # pcoll: one dict per fired pane (window, pane index, accumulated counts, stats, estimate)
    _ = panes | "WritePanes" >> beam.ParDo(WritePane(args.output, config.to_json(indent=None)))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="privfreq aggregate --streaming",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--streaming", action="store_true", help="streaming mode (this parser)")
    ap.add_argument("--config", required=True, help="collection config JSON")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--source", choices=SOURCES, default="files")
    ap.add_argument("--input", help="files source: report file pattern to watch")
    ap.add_argument("--watcher", choices=WATCHERS, default="auto",
                    help="files source: 'poll' (a polling DoFn, for the in-process runner), "
                         "'match-continuously' (fileio.MatchContinuously), or 'auto' by runner")
    ap.add_argument("--poll-interval", type=float, default=10.0, metavar="S")
    ap.add_argument("--max-duration", type=float, default=None, metavar="S",
                    help="files source: stop watching after S seconds (default: never)")
    ap.add_argument("--max-files", type=int, default=None, metavar="N",
                    help="files source, poll watcher: stop after N files")
    ap.add_argument("--pubsub-topic")
    ap.add_argument("--pubsub-subscription")
    ap.add_argument("--pubsub-timestamp-attribute", default=None,
                    help="message attribute holding the event time (ms since epoch or RFC 3339)")
    ap.add_argument("--kafka-bootstrap-servers")
    ap.add_argument("--kafka-topic", nargs="+", default=[])
    ap.add_argument("--kafka-group-id", default=None)
    ap.add_argument("--kafka-consumer-config", nargs="+", default=[], metavar="KEY=VALUE")
    ap.add_argument("--kafka-expansion-service", default=None, metavar="HOST:PORT")
    ap.add_argument("--window-seconds", type=float, default=3600.0)
    ap.add_argument("--period-seconds", type=float, default=None,
                    help="sliding windows of this period (default: fixed windows)")
    ap.add_argument("--allowed-lateness-seconds", type=float, default=0.0)
    ap.add_argument("--event-time", choices=("report", "arrival"), default="report",
                    help="'report': the report's event_time field, else the arrival time; "
                         "'arrival': always the file modification / message time")
    return ap


def check_args(args) -> None:
    """Configuration errors as ``ValueError`` naming the flag."""
    if args.source == "files" and not args.input:
        raise ValueError("aggregate --streaming: --source files needs --input PATTERN")
    if args.source == "pubsub" and bool(args.pubsub_topic) == bool(args.pubsub_subscription):
        raise ValueError("aggregate --streaming: --source pubsub needs exactly one of "
                         "--pubsub-topic and --pubsub-subscription")
    if args.source == "kafka" and not (args.kafka_bootstrap_servers and args.kafka_topic):
        raise ValueError("aggregate --streaming: --source kafka needs --kafka-bootstrap-servers "
                         "and --kafka-topic")
    if not args.poll_interval > 0:
        raise ValueError(f"aggregate --streaming: --poll-interval must be > 0, got "
                         f"{args.poll_interval}")
    if args.max_duration is not None and not args.max_duration >= 0:
        raise ValueError(f"aggregate --streaming: --max-duration must be >= 0, got "
                         f"{args.max_duration}")
    if args.max_files is not None and args.max_files < 1:
        raise ValueError(f"aggregate --streaming: --max-files must be >= 1, got {args.max_files}")
    # Window parameters are validated by WindowedEstimates.
    WindowedEstimates(CollectionConfig("grr", {"k": 2, "epsilon": 1.0}), args.window_seconds,
                      args.period_seconds, args.allowed_lateness_seconds)


def choose_watcher(args, options) -> str:
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    watcher = args.watcher
    if watcher == "auto":
        watcher = "poll" if name in _LOCAL_RUNNERS else "match-continuously"
    if watcher == "match-continuously" and args.max_files is not None:
        raise ValueError("aggregate --streaming: --max-files needs --watcher poll "
                         "(MatchContinuously stops by --max-duration only)")
    return watcher


def run(argv=None, save_main_session=True):
    from privfreq.pipelines.aggregate import _input_pattern, load_config

    args, beam_args = parser().parse_known_args(argv)
    check_args(args)
    if args.input:
        args.input = _input_pattern(args.input)
    config = load_config(args.config)
    options = common.pipeline_options(beam_args, save_main_session)
    watcher = choose_watcher(args, options)
    runner = options.view_as(StandardOptions).runner
    if not (isinstance(runner, str) and runner in _LOCAL_RUNNERS):
        options.view_as(StandardOptions).streaming = True  # unbounded sources on real runners
    if _local(args.output):
        os.makedirs(args.output, exist_ok=True)
    with beam.Pipeline(options=options) as p:
        build(p, config, args, watcher)
    logging.info("aggregate --streaming: wrote %s/%s", args.output, WINDOWS)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
