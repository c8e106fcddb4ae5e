"""The end-to-end demo behind ``make demo``: MSS, k = 1024, n = 10^6, Zipf items (``--k``, ``--n``,
``--epsilon``, ``--distribution`` change them; a test runs it at k = 64, n = 5000).

    python -m privfreq.pipelines.demo --output out/demo
    privfreq demo --output out/demo

1. plans MSS moduli (``protocols.planner.plan``, ℓ = 2) and writes ``OUT/config.json``;
2. ``simulate``: 10^6 Zipf items randomized inside a Beam pipeline → ``OUT/simulate/``;
3. the same multiset of items (rebuilt from the simulation's true counts, shuffled) is written to
   ``OUT/items.parquet``, randomized client-side by ``encode`` → ``OUT/reports.avro``, and
   aggregated by the Beam job ``aggregate`` → ``OUT/aggregate/``; both output directories hold
   ``estimates.parquet``, ``summary.json`` and ``estimates.png``;
4. prints, for both runs, the top-10 items (true, estimate ± 2 stderr) and measured vs predicted MSE.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from privfreq.pipelines import aggregate, common, encode, simulate
from privfreq.pipelines import config as config_cmd
from privfreq.protocols.config import CollectionConfig


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _table(title: str, est_path: str, truth_f: np.ndarray, top: int = 10) -> None:
    t = pq.read_table(est_path).to_pydict()
    f_hat, se = np.array(t["estimate"]), np.array(t["stderr"])
    print(f"\n{title}\n{'item':>6} {'true':>9} {'estimate':>9}   {'± 2 stderr':>10}  covered")
    for i in np.argsort(-truth_f, kind="stable")[:top]:
        lo, hi = f_hat[i] - 2 * se[i], f_hat[i] + 2 * se[i]
        print(f"{i:>6} {truth_f[i]:>9.5f} {f_hat[i]:>9.5f}   {2 * se[i]:>10.5f}  "
              f"{'yes' if lo <= truth_f[i] <= hi else 'no'}")


def run(argv=None, save_main_session=True):
    parser = argparse.ArgumentParser(prog="privfreq demo", description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="out/demo")
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--distribution", default="zipf:1.1")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--moduli", default=None, help="skip the planner: a,b,c")
    args, beam_args = parser.parse_known_args(argv)
    out = args.output.rstrip("/")
    os.makedirs(out, exist_ok=True)

    t0 = time.perf_counter()
    cfg_args = ["--protocol", "mss", "--k", str(args.k), "--epsilon", str(args.epsilon),
                "--output", f"{out}/config.json"]
    if args.moduli:
        cfg_args += ["--moduli", args.moduli]
    else:
        from privfreq.protocols.planner import plan
        best = plan(args.k, args.epsilon, ell=2, top=1)[0]
        print(f"planner (ell=2): moduli {list(best.moduli)}, {best.bits:.1f} bits/report, "
              f"predicted MSE {best.mse_ratio_ss:.3f}x SS, condition number "
              f"{best.condition_number:.2f}")
        cfg_args += ["--moduli", ",".join(map(str, best.moduli))]
    config: CollectionConfig = config_cmd.run(cfg_args)
    runner = beam_args or ["--runner=" + common.DEFAULT_RUNNER]

    t = time.perf_counter()
    simulate.run(["--protocol", "mss", "--k", str(args.k), "--epsilon", str(args.epsilon),
                  "--moduli", ",".join(map(str, config.params["moduli"])), "--n", str(args.n),
                  "--distribution", args.distribution, "--seed", str(args.seed),
                  "--output", f"{out}/simulate", *runner], save_main_session)
    t_sim = time.perf_counter() - t
    sim = _json(f"{out}/simulate/summary.json")
    truth_f = np.array(pq.read_table(f"{out}/simulate/estimates.parquet")
                       .column("true_frequency").to_numpy())

    # The very same data set: the simulated true counts, as items in random order.
    counts = np.rint(truth_f * args.n).astype(np.int64)
    items = np.repeat(np.arange(args.k, dtype=np.int64), counts)
    np.random.default_rng(args.seed).shuffle(items)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"item": items}), buf)
    common.write_bytes_atomic(f"{out}/items.parquet", buf.getvalue().to_pybytes())
    t = time.perf_counter()
    encode.run(["--config", f"{out}/config.json", "--input", f"{out}/items.parquet",
                "--output", f"{out}/reports.avro", "--seed", str(args.seed + 1)])
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    aggregate.run(["--config", f"{out}/config.json", "--input", f"{out}/reports*.avro",
                   "--output", f"{out}/aggregate", *runner], save_main_session)
    t_agg = time.perf_counter() - t
    agg = _json(f"{out}/aggregate/summary.json")
    est_agg = np.array(pq.read_table(f"{out}/aggregate/estimates.parquet")
                       .column("estimate").to_numpy())
    mse_agg = float(np.mean((est_agg - truth_f) ** 2))

    _table(f"simulate ({args.n} reports randomized in the pipeline, {t_sim:.1f} s)",
           f"{out}/simulate/estimates.parquet", truth_f)
    _table(f"encode ({t_enc:.1f} s) + aggregate ({t_agg:.1f} s) of the same items: "
           f"read {agg['n_read']}, accepted {agg['n_accepted']}, rejected {agg['n_rejected']}",
           f"{out}/aggregate/estimates.parquet", truth_f)
    pred = sim["predicted_mse"]
    print(f"\nMSE        simulate {sim['mse']:.4g}   encode+aggregate {mse_agg:.4g}")
    print(f"predicted  {pred:.4g}  ({sim['predicted_mse_kind']}); measured/predicted: "
          f"simulate {sim['mse'] / pred:.3f}, encode+aggregate {mse_agg / pred:.3f}")
    print(f"decode     {sim['decode_seconds']:.2f} s (simulate), {agg['decode_seconds']:.2f} s "
          f"(aggregate); total demo {time.perf_counter() - t0:.1f} s")
    print(f"outputs in {out}/: config.json, items.parquet, reports.avro, simulate/, aggregate/")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run()
