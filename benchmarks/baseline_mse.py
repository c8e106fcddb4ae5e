"""Measured vs analytic MSE of the baseline protocols (k = 1024, n = 10^4, ε ∈ {1, 4}).

For each protocol and ε: ``runs`` seeded collections of the same n users (Zipf(1.1) item counts,
fixed), mean over runs of the per-item MSE of the raw estimate, next to the analytic
``predicted_mse(n, f)`` (mean over items of the exact per-item variance; RAPPOR's is the documented
approximation). Prints a Markdown table; also the MSE relative to SUE's measured MSE at the same ε.

    python benchmarks/baseline_mse.py            # the full table (~2-4 minutes on 2 cores)
    python benchmarks/baseline_mse.py --runs 10  # a quick look
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from privfreq.protocols import get_protocol_class

ZIPF_S = 1.1   # SPEC §5 uses Zipf data; s = 1.1 gives a head of a few % and a long tail


def zipf_counts(k: int, n: int, s: float) -> np.ndarray:
    """Integer item counts summing to n, proportional to (i+1)^-s (largest remainder rounding)."""
    w = (np.arange(k) + 1.0) ** -s
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: n - counts.sum()]] += 1
    return counts


def protocols_for(k: int, eps: float):
    rows = [(pid, get_protocol_class(pid)(k, eps)) for pid in
            ("grr", "oue", "sue", "olh", "hr", "ss", "pgr")]
    rap = get_protocol_class("rappor")
    # RAPPOR, ε = ε∞ of the PRR: without IRR (p=0, q=1: one report is ε-LDP, like the others) and
    # with the paper's IRR (p=0.5, q=0.75: one report is only ε1 < ε). b=128, h=2, 16 cohorts.
    rows.append(("rappor (no IRR)", rap(k, eps, bloom_bits=128, hashes=2, cohorts=16,
                                        p=0.0, q=1.0)))
    rows.append(("rappor (IRR .5/.75)", rap(k, eps, bloom_bits=128, hashes=2, cohorts=16)))
    return rows


def measure(proto, items, f, runs, seed):
    kw = {"stderr": False} if proto.protocol_id == "rappor" else {}
    mses = np.empty(runs)
    for r in range(runs):
        rng = np.random.default_rng([seed, r])
        acc = proto.add_reports(proto.create_accumulator(), proto.randomize(items, rng))
        mses[r] = np.mean((proto.estimate(acc, **kw).frequencies - f) ** 2)
    return mses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--eps", type=float, nargs="+", default=[1.0, 4.0])
    args = ap.parse_args(argv)
    counts = zipf_counts(args.k, args.n, ZIPF_S)
    items = np.repeat(np.arange(args.k), counts)
    f = counts / args.n
    print(f"k = {args.k}, n = {args.n}, {args.runs} seeded runs, Zipf({ZIPF_S}) data\n")
    print("| protocol | ε | measured MSE | analytic MSE | measured/analytic | ±2se | MSE/SUE | sec |")
    print("|---|---|---|---|---|---|---|---|")
    for ei, eps in enumerate(args.eps):
        rows = []
        for pi, (name, proto) in enumerate(protocols_for(args.k, eps)):
            t0 = time.perf_counter()
            mses = measure(proto, items, f, args.runs, seed=1000 * ei + pi)
            sec = time.perf_counter() - t0
            analytic = proto.predicted_mse(args.n, f)
            rows.append((name, mses.mean(), analytic, 2 * mses.std(ddof=1) / np.sqrt(args.runs)
                         / analytic, sec))
        sue = dict((r[0], r[1]) for r in rows)["sue"]
        for name, mse, analytic, se2, sec in rows:
            print(f"| {name} | {eps:g} | {mse:.4e} | {analytic:.4e} | {mse / analytic:.3f} | "
                  f"{se2:.3f} | {mse / sue:.2f} | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()
