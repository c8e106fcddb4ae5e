"""Simulate a collection: synthetic items randomized inside the pipeline, then the server path.

Local::

    privfreq simulate --protocol mss --k 1024 --epsilon 1 --n 1000000 --distribution zipf:1.1 \\
        --seed 7 --output out/sim

Writes ``DIR/estimates.parquet`` (item, estimate, stderr, true_frequency), ``DIR/summary.json``
(the keys of ``aggregate``'s summary plus the truth-based ``transforms.outputs.TRUTH_KEYS``: ``mse``
against the simulated truth, ``predicted_mse``, ...) and ``DIR/estimates.png`` (the top items with
95 % intervals and their true frequencies), published as ``aggregate`` publishes its outputs.
"""
from __future__ import annotations

import argparse
import logging

import apache_beam as beam

from privfreq.pipelines import common
from privfreq.pipelines.config import add_protocol_args, build_config
from privfreq.protocols.config import CollectionConfig
from privfreq.transforms import outputs
from privfreq.transforms.estimate import EstimateFrequencies
from privfreq.transforms.simulate import Distribution, SimulateReports


def _write_results(est, truth, stats: dict, truth_info: dict, config_json: str, out_dir: str):
    return outputs.write_results(est, stats, config_json=config_json, out_dir=out_dir,
                                 truth=truth, truth_info=truth_info)


def build(p: beam.Pipeline, config: CollectionConfig, n: int, distribution: Distribution,
          seed: int, out_dir: str) -> None:
    sim = p | "Simulate" >> SimulateReports(config, n, distribution, seed)
    # sim["reports"]: ReportBatch; sim["truth"]: one int64[k] of true item counts
    estimate = sim["reports"] | "Estimate" >> EstimateFrequencies(config)
    stats = {"read": n, "accepted": n, "rejected": {}}
    truth_info = {"n": n, "distribution": str(distribution), "seed": seed}
    _ = estimate | "WriteResults" >> beam.Map(
        _write_results, beam.pvalue.AsSingleton(sim["truth"]), stats, truth_info,
        config.to_json(indent=None), out_dir)


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq simulate", description=__doc__.split("\n")[0])
    add_protocol_args(parser)
    parser.add_argument("--n", type=int, required=True, help="number of simulated users")
    parser.add_argument("--distribution", default="zipf:1.1", help="zipf:S | spike | uniform")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (>= 0)")
    parser.add_argument("--output", required=True, help="output directory")
    args, beam_args = parser.parse_known_args(argv)
    config = build_config(args)
    distribution = Distribution.parse(args.distribution)
    if args.n < 1:
        raise ValueError(f"simulate: n must be >= 1, got {args.n}")
    if args.seed < 0:
        raise ValueError(f"simulate: seed must be >= 0, got {args.seed}")
    options = common.pipeline_options(beam_args, save_main_session)
    with common.staged_output(args.output) as tmp:
        with beam.Pipeline(options=options) as p:
            build(p, config, args.n, distribution, args.seed, tmp)
    logging.info("simulate: wrote %s", args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
