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

Outputs, each pane directory staged and renamed into place when its pane fires (``DIR`` itself is
not staged: a streaming job has no end at which to publish it)::

    DIR/windows/<start>-<end>-pane<N>/estimates.parquet   (item, estimate, stderr)
    DIR/windows/<start>-<end>-pane<N>/summary.json        (outputs.SUMMARY_KEYS + WINDOW_KEYS)
    DIR/dead_letters/<uuid>.avro                          (one file per batch with rejects)

``DIR/inputs/<digest>-<size>.json`` records each input content the poll watcher has read: after a
restart with the same ``DIR`` it skips files already read (and copies of them under other names),
and each window's panes continue from the latest pane of the earlier run (whose ``totals.npz``
counts are added), so no file is counted twice and the highest pane still covers every report.
``<start>``/``<end>`` are UTC ``YYYYmmddTHHMMSS.mmmZ``. Panes accumulate: pane N of a window covers
every report of it seen so far, so the highest N is the best estimate (late panes come only from
reports within ``--allowed-lateness-seconds``; later ones are dropped by the runner). On a
streaming runner the file watcher's watermark follows the poll clock, so reports whose event time
is older than the allowed lateness when they arrive are dropped: back-fill old files with batch
``aggregate``.
"""
from __future__ import annotations

import argparse
import logging
import os
import uuid

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from privfreq.pipelines import common
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.parse import INVALID, STATS, ParseReports
from privfreq.transforms.streaming import (INPUTS, WINDOWS, DecodeMessages, PollFiles,
                                           ReadTimedReportFiles, WindowedEstimates, WritePane,
                                           bucket_ms, check_windows, write_dead_letter_file)

__all__ = ["build", "build_source", "check_args", "choose_watcher", "kafka_read", "parser", "run"]

SOURCES = ("files", "pubsub", "kafka")
WATCHERS = ("auto", "poll", "match-continuously")
# Runners that execute in this process and ignore an SDF's resume delay: the file watcher polls in
# a plain DoFn there. (Both run a bounded job: windows fire when the watch ends.)
_LOCAL_RUNNERS = ("FnApiRunner", "BundleBasedDirectRunner", "DirectRunner", "SwitchingDirectRunner")


def build_source(p: beam.Pipeline, args, granularity_ms: int, config: CollectionConfig,
                 watcher: str):
    """The chosen source -> PCollection[ReportColumns] stamped with event-time buckets."""
    use_field = args.event_time == "report"
    rows = config.protocol.batch_rows
    if args.source == "files":
        if watcher == "poll":
            files = (p | "Pattern" >> beam.Create([args.input])
                     | "PollFiles" >> beam.ParDo(PollFiles(
                         args.poll_interval, args.max_duration, args.max_files,
                         f"{args.output.rstrip('/')}/{INPUTS}")))
        else:
            now = Timestamp.now()
            stop = MAX_TIMESTAMP if args.max_duration is None else now + args.max_duration
            files = p | "MatchContinuously" >> fileio.MatchContinuously(
                args.input, interval=args.poll_interval, start_timestamp=now,
                stop_timestamp=stop)
        return files | "ReadFiles" >> beam.ParDo(ReadTimedReportFiles(
            rows, granularity_ms, use_field))
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
        DecodeMessages(name, granularity_ms, rows, use_field))


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
    _ = parsed[INVALID] | "DeadLetters" >> beam.FlatMap(write_dead_letter_file, args.output)
    panes = ((parsed.valid, parsed[STATS]) | "ReportsAndStats" >> beam.Flatten()
             | "Windows" >> WindowedEstimates(config, args.window_seconds, args.period_seconds,
                                              args.allowed_lateness_seconds))
    # pcoll: one dict per fired pane (window, pane index, accumulated counts, stats, estimate)
    _ = panes | "WritePanes" >> beam.ParDo(WritePane(args.output, config.to_json(indent=None),
                                                     uuid.uuid4().hex))


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
    check_windows(args.window_seconds, args.period_seconds, args.allowed_lateness_seconds)


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
    args, beam_args = parser().parse_known_args(argv)
    check_args(args)
    if args.input:
        args.input = common.input_pattern(args.input)
    config = common.load_config(args.config)
    options = common.pipeline_options(beam_args, save_main_session)
    watcher = choose_watcher(args, options)
    runner = options.view_as(StandardOptions).runner
    if not (isinstance(runner, str) and runner in _LOCAL_RUNNERS):
        options.view_as(StandardOptions).streaming = True  # unbounded sources on real runners
    if "://" not in args.output:
        os.makedirs(args.output, exist_ok=True)
    with beam.Pipeline(options=options) as p:
        build(p, config, args, watcher)
    logging.info("aggregate --streaming: wrote %s/%s", args.output, WINDOWS)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
