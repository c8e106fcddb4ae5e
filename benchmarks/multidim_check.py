"""Issue 13's "Done when": every multi-attribute protocol's per-attribute mean MSE against its
formula at d = 3 attributes (k = 8, 200, 22000), n = 10^5, ε ∈ {1, 4}, over >= 50 seeded runs.

    OPENBLAS_NUM_THREADS=1 python benchmarks/multidim_check.py --jobs 2 \\
        --output benchmarks/results/multidim_check.md

One fixed population (the same users in every run; Zipf(1.1) marginals, attributes correlated
through a shared uniform, ρ = 0.5: ``evaluate_multidim.synthetic_population``); truth = its
empirical frequencies. Per (protocol, ε) each run randomizes every user afresh (in batches of
10^4 users, counts added into one accumulator) and estimates; per attribute the run's MSE is the
mean squared error over the attribute's k_j items. Reported per attribute: the mean MSE over runs,
the formula ``attribute_mse(n, truth)``, their ratio and the z-score of the difference from the
run-to-run spread (z = (mean − formula)/(sd/√R)). RS+FD's formula is the fixed-population one
(``RSFD.variance``); SPEC §8's i.i.d. form, larger by f(1−f)/n, is in its own column. Runs: at
least ``--runs``, more for cheap protocols, up to ``--seconds`` per (protocol, ε) (the k = 8
attribute's MSE averages only 8 items, so its ratio has a relative standard error of ~7 % at 50
runs: more runs where they are cheap). ALLOMFREE reads ε as its permanent budget ε∞ and reports
at ε1 = ε/2 (``evaluate_multidim.make_protocol``); one round of fresh users per run.

Inner protocols are ``auto`` (least variance; near-ties within 1 % to the cheapest to run, which
at k = 22000 is OUE or PGR rather than SS, 10-20x slower for 0.02 % less variance).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
import zlib

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from privfreq.pipelines.evaluate_multidim import (describe, empirical_frequencies,  # noqa: E402
                                                  make_protocol, synthetic_population)

ATTRIBUTES = ("a8", "a200", "a22000")
DOMAINS = (8, 200, 22000)
PROTOCOLS = ("spl", "smp", "rsfd-grr", "rsfd-oue-z", "rsfd-oue-r", "allomfree")
RHO = 0.5
# Seconds of one core per (protocol, ε) here, slowest first (scheduling only).
COST = {"smp": 400, "allomfree": 250, "spl": 200, "rsfd-oue-z": 150, "rsfd-oue-r": 150,
        "rsfd-grr": 1}
BATCH = 10_000   # users per randomize call (bounds the reports held at once)


def run_task(task: dict) -> dict:
    """Runs of one (protocol, ε): per-run per-attribute MSE, the formulas, the inner picks."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    name, eps, n = task["protocol"], task["epsilon"], task["n"]
    x = synthetic_population(DOMAINS, n, RHO, task["seed"])
    truth = empirical_frequencies(x, DOMAINS)
    proto = make_protocol(name, ATTRIBUTES, DOMAINS, eps)
    starts = np.cumsum((0,) + DOMAINS[:-1])
    mse, t0 = [], time.perf_counter()
    while len(mse) < task["max_runs"] and (
            len(mse) < task["runs"] or time.perf_counter() - t0 < task["seconds"]):
        rng = np.random.default_rng([task["seed"], zlib.crc32(name.encode()), round(eps * 1000),
                                     len(mse)])
        acc = proto.create_accumulator()
        for lo in range(0, n, BATCH):
            proto.add_reports(acc, proto.randomize(x[lo:lo + BATCH], rng))
        err2 = (proto.estimate(acc, stderr=False).frequencies - truth) ** 2
        mse.append((np.add.reduceat(err2, starts) / DOMAINS).tolist())
    iid = [float(np.mean(f * (1 - f))) / n for f in proto.split(truth)]
    return {**task, "mse": mse, "formula": proto.attribute_mse(n, truth).tolist(), "iid_extra": iid,
            "inner": [describe(p) for p in proto.inner_protocols],
            "tuple_epsilon": proto.tuple_epsilon, "seconds": time.perf_counter() - t0}


def _key(t: dict) -> tuple:
    return (t["protocol"], t["epsilon"], t["n"], t["seed"], t["runs"])


def render(results: list[dict], command: str) -> str:
    order = {p: i for i, p in enumerate(PROTOCOLS)}
    results = sorted(results, key=lambda r: (r["epsilon"], order[r["protocol"]]))
    n = results[0]["n"]
    out = ["# Multi-attribute protocols: per-attribute MSE vs formula (issue 13, Done when)\n",
           f"Command: `{command}`\n",
           f"d = 3 attributes, k = {DOMAINS}, n = {n:,} users (one fixed population, Zipf(1.1) "
           f"marginals, attributes correlated through a shared uniform, ρ = {RHO}); truth = its "
           f"empirical frequencies; inner protocols `auto`. Per "
           f"attribute: the mean over R runs of the attribute's MSE ÷ `attribute_mse(n, truth)`, "
           f"± its standard error from the run-to-run spread (sd/√R ÷ formula), and "
           f"z = (mean − formula)/(sd/√R). RS+FD: formula = the fixed-population variance; "
           f"'i.i.d. ratio' divides by SPEC §8's i.i.d. form (larger by f(1−f)/n). ALLOMFREE: "
           f"ε is ε∞, one report at ε1 = ε/2. 'within 10 %': every attribute's ratio in "
           f"[0.9, 1.1].\n",
           "| ε | protocol | tuple ε | inner | R | s/run | ratio k=8 ± se (z) | "
           "ratio k=200 ± se (z) | ratio k=22000 ± se (z) | i.i.d. ratio k=8 / 200 / 22000 | "
           "within 10 % |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    misses, zs = [], []
    for r in results:
        m = np.array(r["mse"])
        mean, se = m.mean(axis=0), m.std(axis=0, ddof=1) / math.sqrt(len(m))
        f = np.array(r["formula"])
        ratio, z = mean / f, (mean - f) / se
        judged = slice(0, 3)
        ok = np.abs(ratio[judged] - 1) <= 0.10
        misses += [(r["protocol"], r["epsilon"], DOMAINS[judged][i], ratio[judged][i],
                    (se / f)[judged][i], z[judged][i]) for i in np.flatnonzero(~ok)]
        zs += z[judged].tolist()
        cells = " | ".join(f"{q:.3f} ± {e:.3f} ({zz:+.1f})" for q, e, zz in zip(ratio, se / f, z))
        iid = (" / ".join(f"{q:.3f}" for q in mean / (f + np.array(r["iid_extra"])))
               if r["protocol"].startswith("rsfd") else "–")
        out.append(f"| {r['epsilon']:g} | {r['protocol']} | {r['tuple_epsilon']:.3f} | "
                   f"{', '.join(r['inner'])} | {len(m)} | {r['seconds'] / len(m):.2f} | {cells} | "
                   f"{iid} | {'yes' if ok.all() else 'NO'} |")
    zs = np.array(zs)
    out.append(f"\n{len(zs) - len(misses)} of {len(zs)} judged (protocol, ε, attribute) ratios "
               f"are within 10 % of the formula; z over them: mean {zs.mean():+.2f}, sd "
               f"{zs.std(ddof=1):.2f} (1 if the formulas hold), max |z| {np.abs(zs).max():.1f}.")
    out.extend(f"- outside: {p} ε = {e:g}, k = {k}: ratio {q:.3f} ± {s:.3f} (z = {zz:+.1f})"
               for p, e, k, q, s, zz in misses)
    out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--epsilons", default="1,4")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=50, help="minimum runs per (protocol, ε)")
    ap.add_argument("--max-runs", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=40.0,
                    help="keep running a (protocol, ε) past --runs until this much time")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--output", help="write the Markdown table here (else print it)")
    ap.add_argument("--cache", help="JSON lines of finished (protocol, ε) tasks: appended to, "
                    "and tasks found there are not run again")
    args = ap.parse_args(argv)
    tasks = [{"protocol": p, "epsilon": float(e), "n": args.n, "seed": args.seed,
              "runs": args.runs, "max_runs": args.max_runs,
              "seconds": args.seconds}
             for p in args.protocols.split(",") for e in args.epsilons.split(",")]
    # Finished tasks from --cache (one JSON line each) are not run again.
    results = []
    if args.cache and os.path.exists(args.cache):
        with open(args.cache) as fh:
            results = [r for r in map(json.loads, fh) if _key(r) in {_key(t) for t in tasks}]
    done = {_key(r) for r in results}
    todo = sorted((t for t in tasks if _key(t) not in done),
                  key=lambda t: (-COST[t["protocol"]], t["epsilon"]))
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for r in pool.imap_unordered(run_task, todo):
            print(json.dumps({k: r[k] for k in ("protocol", "epsilon", "inner", "seconds")}),
                  len(r["mse"]), "runs", flush=True)
            results.append(r)
            if args.cache:
                with open(args.cache, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    text = render(results, "OPENBLAS_NUM_THREADS=1 python benchmarks/multidim_check.py "
                  + " ".join(sys.argv[1:] if argv is None else argv))
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
