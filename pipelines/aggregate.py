"""Aggregate report files into frequency estimates (the server job).

Local (in-process FnApiRunner, offline)::

    privfreq aggregate --config config.json --input 'reports*.avro' --output out/agg
    privfreq aggregate --config config.json --input 'reports*.parquet' --output out/agg

Dataflow (any Beam runner flag passes through)::

    privfreq aggregate --config config.json --input 'gs://b/reports/*.avro' --output gs://b/out \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp

Writes ``DIR/estimates.parquet`` (item, estimate, stderr), ``DIR/summary.json`` (keys:
``transforms.outputs.SUMMARY_KEYS``), ``DIR/estimates.png`` (the top items with 95 % intervals)
and ``DIR/dead_letters-SSSSS-of-NNNNN.avro`` (schemas/dead_letter.avsc), into a staging directory
published when the job succeeds (locally one directory rename; on object stores file by file).

Incremental totals (protocols/totals.py): ``--totals-in A.npz B.npz`` adds earlier runs' merged
counts to today's before decoding (refused unless they share the config's fingerprint), and
``--totals-out T.npz`` saves the merged counts (also kept as ``DIR/totals.npz``; ``T.npz`` is
written whole or not at all), so a daily run never reprocesses old reports and its estimates equal
those of one run over all of them::

    privfreq aggregate --config c.json --input 'day2/*.avro' --output out/day2 \
        --totals-in out/day1/totals.npz --totals-out totals/day2.npz

Inputs are identified by content (``schemas.files.file_digest``, digested before the job starts):
totals remember the digests of the files they hold, a run refuses (naming them) input files
already counted in its ``--totals-in`` unless ``--skip-seen`` skips them, and identical files in
one run are reported in ``summary.json`` (``inputs.duplicates``) and counted once with
``--skip-seen``.

Per-round estimates (longitudinal collections, docs/longitudinal.md): reports that carry a
``round`` (``encode --round R``) are also counted per round; ``estimates.parquet`` then gains a
nullable ``round`` column (null: the pooled estimate of every report of the run; R: round R's),
``summary.json`` a ``rounds`` list and the job writes ``rounds.png``. ``--rounds A:B`` (inclusive)
sends a report whose round lies outside it to the dead letters (``ROUND_OUT_OF_RANGE``), as it does
a negative round.

Named items (docs/formats.md): with ``--domain names.txt`` (the dictionary of a config made with
``config --domain``, checked against its fingerprint) ``estimates.parquet`` gains a ``name``
column and the summary's top items and the figure carry names. Multi-attribute configs add an
``attribute`` column (items numbered within their attribute) and per-attribute summaries.

Discovery (``pem`` configs, universes too large to list; docs/heavy-hitters.md): the counts are
decoded by the prefix-extension search into the ``--top`` heavy hitters (default 20):
``estimates.parquet`` lists them largest first (item id, estimate, stderr, 95 % interval
``lower``/``upper``) and ``summary.json`` adds ``discovered`` (the levels searched).

``--streaming`` runs ``pipelines/aggregate_streaming.py`` (estimates per event-time window) with
its own flags: ``privfreq aggregate --streaming --help``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import apache_beam as beam

from privfreq.pipelines import common
from privfreq.protocols import totals as totals_lib
from privfreq.protocols.base import Counts
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.domain import Domain
from privfreq.transforms import outputs
from privfreq.transforms.estimate import (COMBINE_FANOUT, DISCOVER_TOP, CountReports,
                                          decode_counts, decode_round)
from privfreq.transforms.io import (ReadReportFiles, WriteDeadLetters, digest_inputs,
                                    match_inputs)
from privfreq.transforms.parse import INVALID, ROUNDS, STATS, ParseReports, merge_stats

__all__ = ["TOTALS", "build", "run"]

TOTALS = "totals.npz"


def _merge_prior(counts: Counts, prior_bytes: bytes) -> Counts:
    """Fresh counts + earlier totals (already checked to share the config)."""
    return counts.merge_in(totals_lib.loads(prior_bytes, "--totals-in").counts)


def _write_totals(counts: Counts, config_json: str, path: str, inputs_json: str,
                  untracked: int, untracked_base: int | None) -> None:
    """Write totals holding ``inputs_json``; ``untracked_base`` (a run without digested inputs):
    the merged reports beyond it are untracked too."""
    inputs = tuple(totals_lib.InputFile.from_dict(d) for d in json.loads(inputs_json))
    if untracked_base is not None:
        untracked += counts.n - untracked_base
    totals = totals_lib.Totals(CollectionConfig.from_json(config_json), counts, inputs, untracked)
    outputs._write_bytes(path, totals_lib.dumps(totals))


def _totals_summary(counts: Counts, prior_n: int | None) -> dict | None:
    """The summary's ``totals`` entry (None for a run without totals)."""
    if prior_n is None:
        return None
    return {"n_reports_total": counts.n, "n_reports_prior": prior_n,
            "n_block_total": counts.n_block.tolist()}


def _write_results(est, stats: dict, totals: dict | None, rounds: list, config_json: str,
                   out_dir: str, inputs: dict | None = None, names: list[str] | None = None):
    return outputs.write_results(est, stats, config_json=config_json, out_dir=out_dir,
                                 totals=totals, inputs=inputs, rounds=rounds, names=names)


def _check_top(top: int) -> int:
    if top < 1:
        raise ValueError(f"--top: must be >= 1, got {top}")
    return top


def parse_rounds(text: str | None) -> tuple[int, int] | None:
    """``--rounds A:B`` (or one round ``A``) -> ``(A, B)``, inclusive, ``0 <= A <= B``."""
    if text is None:
        return None
    try:
        lo, _, hi = text.partition(":")
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"--rounds: expected FIRST:LAST (integers), got {text!r}") from None
    if not 0 <= a <= b:
        raise ValueError(f"--rounds: need 0 <= FIRST <= LAST, got {text!r}")
    return a, b


def build(p: beam.Pipeline, config: CollectionConfig, pattern: str | None, out_dir: str,
          prior: totals_lib.Totals | None = None, write_totals: bool = False,
          files: list[totals_lib.InputFile] | None = None,
          inputs_report: dict | None = None, rounds: tuple[int, int] | None = None,
          names: list[str] | None = None, top: int = DISCOVER_TOP) -> None:
    """Attach the aggregation graph to ``p``, writing into ``out_dir``.

    Reads the files matching ``pattern``, or exactly ``files`` (digested ``InputFile``s, which the
    written totals then record). With ``prior`` (earlier totals of this config) the merged counts
    are added to it before decoding; with ``write_totals`` they are written to
    ``out_dir/totals.npz``. ``inputs_report``: the summary's ``inputs`` entry. Reports with a
    round are also counted per round; ``rounds``: the inclusive range of rounds accepted.
    ``names``: item labels of a named domain for the outputs; ``top``: the heavy hitters a
    discovery protocol (PEM) lists."""
    config_json = config.to_json(indent=None)
    cols = p | "ReadReports" >> ReadReportFiles(pattern if files is None else None,
                                                config.protocol.batch_rows, files=files)
    # pcoll: ReportColumns (<= batch_rows records each)
    parsed = cols | "Parse" >> beam.ParDo(ParseReports(config, rounds, by_round=True)
                                          ).with_outputs(INVALID, STATS, ROUNDS, main="valid")
    # parsed.valid: ReportBatch; parsed.invalid: list[dead-letter dict]; parsed.stats: tally dict
    _ = parsed[INVALID] | "DeadLetters" >> WriteDeadLetters(f"{out_dir}/{outputs.DEAD_LETTERS}")
    stats = parsed[STATS] | "SumStats" >> beam.CombineGlobally(merge_stats)
    counts = parsed.valid | "CountReports" >> beam.CombineGlobally(
        CountReports(config)).with_fanout(COMBINE_FANOUT)
    # pcoll: one Counts of this run's reports
    if prior is not None:
        counts = counts | "MergeTotalsIn" >> beam.Map(_merge_prior, totals_lib.dumps(prior))
    if write_totals:
        held = [*(prior.inputs if prior is not None else ()), *(files or ())]
        # A run by pattern records no inputs: its own reports are untracked, like those of
        # version-1 totals.
        untracked = prior.untracked_reports if prior is not None else 0
        untracked_base = None if files is not None else (
            prior.n_reports if prior is not None else 0)
        _ = counts | "WriteTotals" >> beam.Map(
            _write_totals, config_json, f"{out_dir}/{TOTALS}",
            json.dumps([f.to_dict() for f in held]), untracked, untracked_base)
    with_totals = prior is not None or write_totals
    totals = counts | "TotalsSummary" >> beam.Map(
        _totals_summary, (prior.n_reports if prior is not None else 0) if with_totals else None)
    per_round = (parsed[ROUNDS]
                 | "CountPerRound" >> beam.CombinePerKey(CountReports(config))
                 | "DecodeRounds" >> beam.Map(decode_round, config_json, top))
    # pcoll: (round, Estimate, n) per round present (none for files without rounds)
    estimate = counts | "Decode" >> beam.Map(decode_counts, config_json, top)
    _ = estimate | "WriteResults" >> beam.Map(
        _write_results, beam.pvalue.AsSingleton(stats), beam.pvalue.AsSingleton(totals),
        beam.pvalue.AsList(per_round), config_json, out_dir, inputs_report, names)


def select_files(pattern: str, prior: totals_lib.Totals | None, skip_seen: bool
                 ) -> tuple[list[totals_lib.InputFile], dict]:
    """Match and digest the inputs, then ``totals.select_inputs`` against ``prior``'s inputs:
    the files to count and the summary's ``inputs`` entry (with ``digest_seconds``).
    ``ValueError`` for no match, or for seen files without ``skip_seen``."""
    t0 = time.perf_counter()
    digested = digest_inputs(match_inputs(pattern))
    seconds = time.perf_counter() - t0
    files, report = totals_lib.select_inputs(digested, prior.inputs if prior else (), skip_seen)
    report["digest_seconds"] = round(seconds, 4)
    report["untracked_prior_reports"] = prior.untracked_reports if prior else 0
    for group in report["duplicates"]:
        logging.warning("aggregate: identical input files %s (%s)", ", ".join(group),
                        "counted once: --skip-seen" if skip_seen else "each counted")
    for path in report["skipped_seen"]:
        logging.warning("aggregate: %s skipped: already counted in --totals-in", path)
    if prior is not None and prior.untracked_reports:
        logging.warning("aggregate: %d reports of --totals-in have no recorded inputs; inputs "
                        "among them cannot be recognised", prior.untracked_reports)
    return files, report


def run(argv=None, save_main_session=True):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--streaming" in argv:
        from privfreq.pipelines import aggregate_streaming
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
    parser.add_argument("--skip-seen", action="store_true",
                        help="skip input files whose content is already counted in --totals-in "
                             "(default: refuse them), and count identical input files once")
    parser.add_argument("--rounds", default=None, metavar="FIRST:LAST",
                        help="rounds of this run (inclusive); a report with a round outside "
                             "goes to the dead letters (ROUND_OUT_OF_RANGE)")
    parser.add_argument("--domain", default=None, metavar="NAMES.txt",
                        help="the names file of a config made with --domain: outputs carry names")
    parser.add_argument("--top", type=int, default=DISCOVER_TOP,
                        help=f"discovery protocols (pem): heavy hitters to list (default "
                             f"{DISCOVER_TOP})")
    args, beam_args = parser.parse_known_args(argv)
    rounds = parse_rounds(args.rounds)
    config = common.load_config(args.config)
    names = (None if args.domain is None
             else Domain.for_config(args.domain, config.domain).labels())
    prior = common.read_totals(args.totals_in, config)  # fail fast, before any work
    options = common.pipeline_options(beam_args, save_main_session)
    files, report = select_files(common.input_pattern(args.input), prior, args.skip_seen)
    with common.staged_output(args.output) as tmp:
        with beam.Pipeline(options=options) as p:
            build(p, config, None, tmp, prior=prior, write_totals=args.totals_out is not None,
                  files=files, inputs_report=report, rounds=rounds, names=names,
                  top=_check_top(args.top))
    if args.totals_out is not None:
        common.write_bytes_atomic(args.totals_out,
                                  common.read_bytes(f"{args.output.rstrip('/')}/{TOTALS}"))
    logging.info("aggregate: wrote %s", args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
