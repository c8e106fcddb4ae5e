"""Simulate a collection: synthetic items randomized inside the pipeline, then the server path.

Local::

    privfreq simulate --protocol mss --k 1024 --epsilon 1 --n 1000000 --distribution zipf:1.1 \\
        --seed 7 --output out/sim

Writes ``DIR/estimates.parquet`` (item, estimate, stderr, true_frequency), ``DIR/summary.json``
(the keys of ``aggregate``'s summary plus the truth-based ``transforms.outputs.TRUTH_KEYS``: ``mse``
against the simulated truth, ``predicted_mse``, ...) and ``DIR/estimates.png`` (the top items with
95 % intervals and their true frequencies), published as ``aggregate`` publishes its outputs.

Several attributes per user (SPEC §8; the protocol flags of ``privfreq config``)::

    privfreq simulate --protocol smp --attributes 8,200,22000 --epsilon 2 --distribution zipf:1.1 \
        --n 100000 --seed 1 [--inner auto] [--correlation 0.5] --output out/multi

draws each user's tuple (attribute j from the distribution over ``[k_j]``; ``--correlation``: a
Gaussian copula tying the attributes) and writes ``estimates.parquet`` with an ``attribute``
column, ``summary.json`` with per-attribute ``mse`` and ``predicted_mse`` (split term included)
and one figure with a panel per attribute.

Heavy hitters (``pem``; the universe is never listed, so keep ``k`` at most ~2^24 for the
simulated truth)::

    privfreq simulate --protocol pem --k 1048576 --epsilon 4 --n 1000000 --seed 1 --top 20 \
        --output out/pem

writes the discovered top items largest first (estimates.parquet: item, estimate, stderr, 95 %
interval, true frequency) and ``discovered`` in summary.json with the precision of the top-N
against the true top-N.

Evolving data (longitudinal protocols, SPEC §7; docs/longitudinal.md)::

    privfreq simulate --protocol loloha --k 1024 --epsilon 0.8 --epsilon-perm 2 --n 100000 \
        --rounds 10 --change-rate 0.1 --distribution zipf:1.3 --seed 1 --output out/long

Users are sharded; each shard holds its users' memoized state (``MemoStore``) for all rounds
(``transforms.simulate.SimulateRounds``): every round a user keeps its item with probability
``1 − R``, else draws a new one. Writes ``DIR/rounds.parquet`` (round, item, estimate, stderr,
true_frequency), ``DIR/summary.json`` (``protocol``, ``config``, ``truth``, ``rounds``: per round
``round, n, mse, predicted_mse``; ``budget``: ``epsilon_perm, cap``, and ε spent per user
``mean, p50, p99, max, at_cap``) and ``DIR/rounds.png``.
"""
from __future__ import annotations

import argparse
import logging

import apache_beam as beam
import numpy as np

from privfreq.pipelines import common
from privfreq.pipelines.config import add_protocol_args, build_config
from privfreq.protocols.config import CollectionConfig
from privfreq.protocols.domain import Domain
from privfreq.transforms import outputs
from privfreq.transforms.simulate import Distribution, SimulateReports, SimulateRounds
from privfreq.transforms.estimate import (DISCOVER_TOP, CountReports, EstimateFrequencies,
                                          decode_round)

ROUNDS_TABLE = "rounds.parquet"


def _write_results(est, truth, stats: dict, truth_info: dict, config_json: str, out_dir: str,
                   names: list[str] | None = None):
    return outputs.write_results(est, stats, config_json=config_json, out_dir=out_dir,
                                 truth=truth, truth_info=truth_info, names=names)


def build(p: beam.Pipeline, config: CollectionConfig, n: int, distribution: Distribution,
          seed: int, out_dir: str, correlation: float = 0.0,
          names: list[str] | None = None, top: int = DISCOVER_TOP) -> None:
    sim = p | "Simulate" >> SimulateReports(config, n, distribution, seed,
                                            correlation=correlation)
    # sim["reports"]: ReportBatch; sim["truth"]: one int64[k] of true item counts
    estimate = sim["reports"] | "Estimate" >> EstimateFrequencies(config, top=top)
    stats = {"read": n, "accepted": n, "rejected": {}}
    truth_info = {"n": n, "distribution": str(distribution), "seed": seed}
    if correlation:
        truth_info["correlation"] = correlation
    _ = estimate | "WriteResults" >> beam.Map(
        _write_results, beam.pvalue.AsSingleton(sim["truth"]), stats, truth_info,
        config.to_json(indent=None), out_dir, names)


def _keys_summary(hist, epsilon_perm: float, cap: float) -> dict:
    """Spent ε per user (ε∞ × distinct memo keys) from the histogram of keys per user."""
    hist = np.asarray(hist, dtype=np.int64)
    spent = np.arange(len(hist)) * epsilon_perm
    n = int(hist.sum())
    cdf = np.cumsum(hist)

    def q(p):
        return float(spent[int(np.searchsorted(cdf, p * n, side="left"))])

    return {"epsilon_perm": epsilon_perm, "cap": cap, "n_users": n,
            "mean": float((hist * spent).sum() / n), "p50": q(0.5), "p99": q(0.99),
            "max": float(spent[np.flatnonzero(hist)[-1]]),
            "at_cap": int(hist[-1])}


def _write_rounds(_, per_round: list, truth: list, keys, truth_info: dict, config_json: str,
                  out_dir: str) -> dict:
    """``rounds.parquet``, ``summary.json`` and ``rounds.png`` of a longitudinal simulation."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    config = CollectionConfig.from_json(config_json)
    proto = config.protocol
    k = proto.k
    per_round = sorted(per_round, key=lambda t: t[0])
    true = {r: outputs.truth_frequencies(proto, c)[0] for r, c in truth}
    items = outputs.item_columns(proto)
    rows, entries = [], []
    for r, est, n in per_round:
        f = true[r]
        rows.append(pa.table({
            "round": np.full(k, r, np.int64), **items,
            "estimate": est.frequencies.astype(np.float64),
            "stderr": est.stderr.astype(np.float64), "true_frequency": f}))
        entry = {"round": r, "n": int(n), "mse": float(np.mean((est.frequencies - f) ** 2)),
                 "predicted_mse": outputs.predicted(proto, int(n), f)["predicted_mse"]}
        if getattr(proto, "multi_attribute", False):  # ALLOMFREE: per attribute, split term in
            pred = proto.attribute_mse(int(n), f)
            entry["attributes"] = [
                {"attribute": a, "mse": float(np.mean((est.frequencies[sl] - f[sl]) ** 2)),
                 "predicted_mse": float(pred[j])}
                for j, a in enumerate(proto.attributes) for sl in [proto.attribute_slice(j)]]
        entries.append(entry)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.concat_tables(rows), buf)
    outputs._write_bytes(f"{out_dir}/{ROUNDS_TABLE}", buf.getvalue().to_pybytes())
    summary = {"protocol": proto.protocol_id,
               "config": {**config.to_dict(), "fingerprint": config.fingerprint},
               "truth": truth_info, "rounds": entries,
               "budget": _keys_summary(keys, float(proto.epsilon_perm), float(proto.budget_cap))}
    outputs._write_bytes(f"{out_dir}/{outputs.ROUNDS_PLOT}", outputs.plot_rounds(
        [(r, e) for r, e, _ in per_round], per_round[0][1],
        f"{proto.protocol_id} k={k} ε∞={proto.epsilon_perm:g} ε1={proto.epsilon:g}: "
        f"{len(per_round)} rounds, change rate {truth_info['change_rate']:g}", truth=true))
    summary = outputs._jsonable(summary)
    outputs._write_bytes(f"{out_dir}/{outputs.SUMMARY}",
                         (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def build_rounds(p: beam.Pipeline, config: CollectionConfig, n: int, distribution: Distribution,
                 seed: int, rounds: int, change_rate: float, out_dir: str,
                 correlation: float = 0.0) -> None:
    """A longitudinal simulation: users evolving over ``rounds`` rounds, estimated per round."""
    config_json = config.to_json(indent=None)
    sim = p | "SimulateRounds" >> SimulateRounds(config, n, distribution, seed, rounds,
                                                 change_rate, correlation=correlation)
    per_round = (sim["reports"]
                 | "CountPerRound" >> beam.CombinePerKey(CountReports(config))
                 | "DecodeRounds" >> beam.Map(decode_round, config_json))
    truth_info = {"n": n, "distribution": str(distribution), "seed": seed, "rounds": rounds,
                  "change_rate": change_rate}
    _ = (sim["keys"]
         | "WriteRounds" >> beam.Map(
             lambda keys, pr, tr: _write_rounds(None, pr, tr, keys, truth_info, config_json,
                                                out_dir),
             beam.pvalue.AsList(per_round), beam.pvalue.AsList(sim["truth"])))


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq simulate", description=__doc__.split("\n")[0])
    add_protocol_args(parser)
    parser.add_argument("--n", type=int, required=True, help="number of simulated users")
    parser.add_argument("--distribution", default="zipf:1.1", help="zipf:S | spike | uniform")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (>= 0)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--rounds", type=int, default=None,
                        help="longitudinal protocols: rounds of evolving data (default 1)")
    parser.add_argument("--change-rate", type=float, default=0.1,
                        help="with --rounds: probability a user draws a new item each round")
    parser.add_argument("--top", type=int, default=DISCOVER_TOP,
                        help=f"discovery protocols (pem): heavy hitters to list (default "
                             f"{DISCOVER_TOP})")
    parser.add_argument("--correlation", type=float, default=0.0,
                        help="multi-attribute protocols: Gaussian-copula correlation ρ in [0, 1] "
                             "between the attributes (default 0: independent)")
    args, beam_args = parser.parse_known_args(argv)
    config = build_config(args)
    names = (None if args.domain is None
             else Domain.for_config(args.domain, config.domain).labels())
    longitudinal = getattr(config.protocol, "longitudinal", False)
    if args.rounds is not None and not longitudinal:
        raise ValueError(f"simulate: --rounds needs a longitudinal protocol (lgrr, losue, lsue, "
                         f"loloha, biloloha, dbitflip), got {config.protocol_id!r}")
    distribution = Distribution.parse(args.distribution)
    if args.n < 1:
        raise ValueError(f"simulate: n must be >= 1, got {args.n}")
    if args.seed < 0:
        raise ValueError(f"simulate: seed must be >= 0, got {args.seed}")
    if args.top < 1:
        raise ValueError(f"simulate: --top must be >= 1, got {args.top}")
    options = common.pipeline_options(beam_args, save_main_session)
    with common.staged_output(args.output) as tmp:
        with beam.Pipeline(options=options) as p:
            if longitudinal:
                build_rounds(p, config, args.n, distribution, args.seed, args.rounds or 1,
                             args.change_rate, tmp, args.correlation)
            else:
                build(p, config, args.n, distribution, args.seed, tmp, args.correlation, names,
                      args.top)
    logging.info("simulate: wrote %s", args.output)
    return args.output


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
