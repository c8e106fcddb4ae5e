"""Aggregate report files into frequency estimates (the server job).

Local (in-process FnApiRunner, offline)::

    privfreq aggregate --config config.json --input 'reports*.avro' --output out/agg
    privfreq aggregate --config config.json --input 'reports*.parquet' --output out/agg

Dataflow (any Beam runner flag passes through)::

    privfreq aggregate --config config.json --input 'gs://b/reports/*.avro' --output gs://b/out \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp

Writes ``DIR/estimates.parquet`` (item, estimate, stderr), ``DIR/summary.json`` and
``DIR/dead_letters-SSSSS-of-NNNNN.avro`` (schemas/dead_letter.avsc), staged and then renamed.

Incremental totals (protocols/totals.py): ``--totals-in A.npz B.npz`` adds earlier runs' merged
counts to today's before decoding (refused unless they share the config's fingerprint), and
``--totals-out T.npz`` saves the merged counts (also kept as ``DIR/totals.npz``), so a daily run
never reprocesses old reports and its estimates equal those of one run over all of them::

    privfreq aggregate --config c.json --input 'day2/*.avro' --output out/day2 \
        --totals-in out/day1/totals.npz --totals-out totals/day2.npz
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from privfreq.pipelines import common
from privfreq.protocols import totals as totals_lib
from privfreq.protocols.base import Counts
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms.estimate import COMBINE_FANOUT, CountReports, EstimateFrequencies, decode_counts
from privfreq.transforms.io import ReadReportFiles, WriteDeadLetters
from privfreq.transforms.parse import INVALID, STATS, ParseReports, merge_stats
from privfreq.transforms.simulate import batch_rows


TOTALS = "totals.npz"


def _merge_prior(counts: Counts, prior_bytes: bytes) -> Counts:
    """Fresh counts + earlier totals (already checked to share the config)."""
    return counts.merge_in(totals_lib.loads(prior_bytes, "--totals-in").counts)


def _write_totals(counts: Counts, config_json: str, path: str) -> str:
    data = totals_lib.dumps(totals_lib.Totals(CollectionConfig.from_json(config_json), counts))
    common._write_bytes(path, data)
    return path


def _totals_extra(counts: Counts, prior_n: int) -> dict:
    return {"totals": {"n_reports_total": counts.n, "n_reports_prior": prior_n,
                       "n_block_total": counts.n_block.tolist()}}


def build(p: beam.Pipeline, config: CollectionConfig, pattern: str, out_dir: str,
          prior: totals_lib.Totals | None = None, write_totals: bool = False) -> None:
    """Attach the aggregation graph to ``p``, writing into ``out_dir``.

    With ``prior`` (earlier totals of this config) and/or ``write_totals``, the merged counts are
    added to ``prior`` before decoding and/or written to ``out_dir/totals.npz``."""
    if prior is not None or write_totals:
        _build_with_totals(p, config, pattern, out_dir, prior, write_totals)
        return
    cols = p | "ReadReports" >> ReadReportFiles(pattern, batch_rows(config))
    # pcoll: ReportColumns (≤ batch_rows records each)
    parsed = cols | "Parse" >> beam.ParDo(ParseReports(config)).with_outputs(
        INVALID, STATS, main="valid")
    # parsed.valid: ReportBatch; parsed.invalid: list[dead-letter dict]; parsed.stats: tally dict
    _ = parsed[INVALID] | "DeadLetters" >> WriteDeadLetters(f"{out_dir}/{common.DEAD_LETTERS}")
    stats = parsed[STATS] | "SumStats" >> beam.CombineGlobally(merge_stats)
    estimate = parsed.valid | "Estimate" >> EstimateFrequencies(config)
    _ = estimate | "WriteResults" >> beam.Map(
        lambda est, st, cj, od: common.write_results(est, st, None, config_json=cj, out_dir=od),
        beam.pvalue.AsSingleton(stats), config.to_json(indent=None), out_dir)


def _build_with_totals(p, config, pattern, out_dir, prior, write_totals) -> None:
    cols = p | "ReadReports" >> ReadReportFiles(pattern, batch_rows(config))
    parsed = cols | "Parse" >> beam.ParDo(ParseReports(config)).with_outputs(
        INVALID, STATS, main="valid")
    _ = parsed[INVALID] | "DeadLetters" >> WriteDeadLetters(f"{out_dir}/{common.DEAD_LETTERS}")
    stats = parsed[STATS] | "SumStats" >> beam.CombineGlobally(merge_stats)
    config_json = config.to_json(indent=None)
    counts = (parsed.valid | "CountReports" >> beam.CombineGlobally(
        CountReports(config)).with_fanout(COMBINE_FANOUT))
    # pcoll: one Counts of this run's reports
    prior_n = 0
    if prior is not None:
        prior_n = prior.n_reports
        counts = counts | "MergeTotalsIn" >> beam.Map(_merge_prior, totals_lib.dumps(prior))
    if write_totals:
        _ = counts | "WriteTotals" >> beam.Map(_write_totals, config_json, f"{out_dir}/{TOTALS}")
    estimate = counts | "Decode" >> beam.Map(decode_counts, config_json)
    extra = counts | "TotalsSummary" >> beam.Map(_totals_extra, prior_n)
    _ = estimate | "WriteResults" >> beam.Map(
        lambda est, st, ex, cj, od: common.write_results(est, st, None, config_json=cj, out_dir=od,
                                                         extra=ex),
        beam.pvalue.AsSingleton(stats), beam.pvalue.AsSingleton(extra), config_json, out_dir)


def load_config(path: str) -> CollectionConfig:
    """The collection config from a local path or any Beam filesystem (``gs://`` on Dataflow)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return CollectionConfig.from_json(f.read().decode("utf-8"))


def read_totals(paths: list[str], config: CollectionConfig) -> totals_lib.Totals | None:
    """Load and merge ``--totals-in`` files (any Beam filesystem); ``ValueError`` on a config
    mismatch, naming the file."""
    loaded = []
    for path in paths:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            t = totals_lib.loads(f.read(), path)
        if t.fingerprint != config.fingerprint:
            raise ValueError(
                f"--totals-in {path}: totals of config {t.fingerprint} ({t.config.protocol_id}) "
                f"cannot be merged into a run of config {config.fingerprint} "
                f"({config.protocol_id})")
        loaded.append(t)
    return totals_lib.merge(loaded) if loaded else None


def _input_pattern(pattern: str) -> str:
    """Local patterns made absolute: Beam's local match finds nothing for a bare relative glob
    such as ``reports*.avro`` (it does for ``./reports*.avro``)."""
    return pattern if "://" in pattern else os.path.abspath(pattern)


def _publish_totals(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` via a temporary name, so ``dst`` is never half-written."""
    tmp = f"{dst}.tmp-{uuid.uuid4().hex[:12]}"
    FileSystems.copy([src], [tmp])
    if FileSystems.exists(dst):
        FileSystems.delete([dst])
    FileSystems.rename([tmp], [dst])


def run(argv=None, save_main_session=True):
    if "--streaming" in (sys.argv[1:] if argv is None else argv):
        from privfreq.pipelines import aggregate_streaming  # event-time windows: its own graph and flags
        return aggregate_streaming.run(argv, save_main_session)
    parser = argparse.ArgumentParser(prog="privfreq aggregate", description=__doc__.split("\n")[0])
    parser.add_argument("--streaming", action="store_true",
                        help="estimates per event-time window from a file watcher, Pub/Sub or "
                             "Kafka: see `privfreq aggregate --streaming --help`")
    parser.add_argument("--config", required=True, help="collection config JSON")
    parser.add_argument("--input", required=True,
                        help="report file pattern: Avro (report.avsc) and/or Parquet "
                             "(schemas.REPORT_PARQUET_SCHEMA), by extension or content; large "
                             "files are read in parallel splits")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--totals-in", nargs="+", default=[], metavar="PATH",
                        help="earlier totals (.npz) of the same config to add before decoding")
    parser.add_argument("--totals-out", default=None, metavar="PATH",
                        help="save the merged totals here (also written as DIR/totals.npz)")
    args, beam_args = parser.parse_known_args(argv)
    config = load_config(args.config)
    prior = read_totals(args.totals_in, config)  # fail fast, before any work
    options = common.pipeline_options(beam_args, save_main_session)
    with common.staged_output(args.output) as tmp:
        with beam.Pipeline(options=options) as p:
            build(p, config, _input_pattern(args.input), tmp, prior=prior,
                  write_totals=args.totals_out is not None)
    if args.totals_out is not None:
        _publish_totals(f"{args.output.rstrip('/')}/{TOTALS}", args.totals_out)
    logging.info("aggregate: wrote %s", args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
