"""Aggregate report files into frequency estimates (the server job).

Local (in-process FnApiRunner, offline)::

    privfreq aggregate --config config.json --input 'reports*.avro' --output out/agg

Dataflow (any Beam runner flag passes through)::

    privfreq aggregate --config config.json --input 'gs://b/reports/*.avro' --output gs://b/out \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp

Writes ``DIR/estimates.parquet`` (item, estimate, stderr), ``DIR/summary.json`` and
``DIR/dead_letters-SSSSS-of-NNNNN.avro`` (schemas/dead_letter.avsc), staged and then renamed.
"""
from __future__ import annotations

import argparse
import logging

import apache_beam as beam

from pipelines import common
from protocols.config import CollectionConfig
from transforms.estimate import EstimateFrequencies
from transforms.io import ReadReportFiles, WriteDeadLetters
from transforms.parse import INVALID, STATS, ParseReports, merge_stats
from transforms.simulate import batch_rows


def build(p: beam.Pipeline, config: CollectionConfig, pattern: str, out_dir: str) -> None:
    """Attach the aggregation graph to ``p``, writing into ``out_dir``."""
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


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq aggregate", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="collection config JSON")
    parser.add_argument("--input", required=True, help="report file pattern (Avro, report.avsc)")
    parser.add_argument("--output", required=True, help="output directory")
    args, beam_args = parser.parse_known_args(argv)
    config = CollectionConfig.load(args.config)
    options = common.pipeline_options(beam_args, save_main_session)
    with common.staged_output(args.output) as tmp:
        with beam.Pipeline(options=options) as p:
            build(p, config, args.input, tmp)
    logging.info("aggregate: wrote %s", args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
