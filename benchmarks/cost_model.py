"""Fit the advisor's cost model to measurements and report its error on held-out cells (issue 15).

    python benchmarks/cost_model.py [--repeats 2] [--write]

For every cost family (``protocols.advisor.family_of``: grr, ue, lh, hr, ss, mss, pgr, ...) and
every cell (k, ε, n) it times, best of ``--repeats``, one thread:
  client: ``proto.randomize(items, rng)`` on n Zipf(1.1) items → µs per report;
  server: ``add_reports`` of those n reports + ``estimate(stderr=False)`` → seconds.
Model (µs), linear in the work units of ``advisor.cost_features(proto) = (u_c, u_s, u_d)``:
  client = a + b·u_c;  server = n·(c + d·u_s) + e + g·u_d,
fitted per family by non-negative least squares on relative residuals (rows divided by the
measurement), on the TRAIN cells; the HELD-OUT cells (other k, ε and n) are only predicted. The
report gives every held-out ratio predicted/measured and the worst factor max(r, 1/r) per family
(target: within 2). ``--write`` stores the constants in protocols/cost_constants.py (read by the
advisor) and the report in benchmarks/results/cost_model.md.
The machine is shared (2 cores, several jobs): minima of repeats are the least disturbed runs.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402

from privfreq.protocols import advisor, get_protocol_class  # noqa: E402
from privfreq.protocols.planner import primes_up_to  # noqa: E402

# One representative protocol per family (the refined ones share their parent's code paths).
FAMILIES = {"grr": "grr", "ue": "oue", "lh": "olh", "hr": "hr", "ss": "ss", "mss": "mss",
            "pgr": "pgr", "pi_rappor": "pi_rappor", "css": "css"}
# Measured rows of every family, so ``--only`` re-measures some families and refits all.
ROWS = os.path.join(ROOT, "benchmarks", "results", "cost_model_rows.json")
TRAIN = [(k, e, n) for k in (128, 2048, 16384) for e in (1.0, 4.0) for n in (20_000, 100_000)]
HELD_OUT = [(700, 2.0, 50_000), (6000, 3.0, 30_000), (12000, 1.5, 60_000), (300, 5.0, 150_000)]
# OLH's server is Θ(n·k) hashes (~3 ns each): cells are capped at this many (report, item) pairs
# by shrinking n, so one cell stays ~1 s on the shared machine.
LH_PAIRS = 1.5e8
MIN_SECONDS = 1.0
MAX_REPEATS = 15
# SS-type reports of the client batch are capped at this many values (memory and time).
SS_VALUES = 2e7


def make(family: str, k: int, eps: float):
    pid = FAMILIES[family]
    if pid == "mss":                      # the planner's usual pick: the ℓ = 2 largest primes <= k
        moduli = tuple(int(p) for p in primes_up_to(k)[-2:])
        return get_protocol_class("mss")(k=k, epsilon=eps, moduli=moduli)
    return get_protocol_class(pid)(k=k, epsilon=eps)


def cell_n(proto, n: int) -> int:
    fam = advisor.family_of(proto.protocol_id)
    if fam in ("lh", "pi_rappor"):
        n = min(n, int(LH_PAIRS / proto.k))
    if fam == "css":                     # ~30-200 µs per report on both sides
        n = min(n, 5000)
    if fam in ("ss", "mss"):
        n = min(n, int(SS_VALUES / max(1, proto.values_width)))
    return max(1000, n)


def measure(proto, n: int, repeats: int, seed: int = 0) -> tuple[float, float]:
    """(client µs per report, server seconds), minima over repeats."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, proto.k + 1) ** 1.1
    items = rng.choice(proto.k, n, p=w / w.sum())
    proto.randomize(items[:1000], rng)                     # warm lazy tables (PGR geometry, ...)
    proto.estimate(proto.add_reports(proto.create_accumulator(), proto.randomize(items[:1000], rng)),
                   stderr=False)
    client, server = math.inf, math.inf
    spent, done = 0.0, 0
    # at least ``repeats`` runs, more (up to MAX_REPEATS) while they total < MIN_SECONDS: short
    # cells are the noisiest on a shared machine
    while done < repeats or (spent < MIN_SECONDS and done < MAX_REPEATS):
        done += 1
        t0 = time.perf_counter()
        batch = proto.randomize(items, rng)
        t1 = time.perf_counter()
        acc = proto.add_reports(proto.create_accumulator(), batch)
        proto.estimate(acc, stderr=False)
        t2 = time.perf_counter()
        client, server = min(client, (t1 - t0) / n * 1e6), min(server, t2 - t1)
        spent += t2 - t0
        del batch
    return client, server


def rows(family, cells, repeats):
    out = []
    for k, e, n in cells:
        proto = make(family, k, e)
        n = cell_n(proto, n)
        c, s = measure(proto, n, repeats)
        out.append({"family": family, "k": k, "epsilon": e, "n": n,
                    "features": list(advisor.cost_features(proto)), "client_us": c,
                    "server_s": s})
        print(f"  {family:4} k={k:6} eps={e:3} n={n:7}  client {c:9.3f} us  server {s:8.4f} s",
              flush=True)
    return out


def fit(train):
    """NNLS on relative residuals: client [1, u_c]; server µs [n, n·u_s, 1, u_d]."""
    a = np.array([[1.0, r["features"][0]] for r in train])
    y = np.array([r["client_us"] for r in train])
    client, _ = nnls(a / y[:, None], np.ones(len(y)))
    a = np.array([[r["n"], r["n"] * r["features"][1], 1.0, r["features"][2]] for r in train])
    y = np.array([r["server_s"] * 1e6 for r in train])
    server, _ = nnls(a / y[:, None], np.ones(len(y)))
    return {"client": [float(v) for v in client], "server": [float(v) for v in server]}


def predict(constants, r):
    uc, us, ud = r["features"]
    c = constants["client"][0] + constants["client"][1] * uc
    a, b, e, g = constants["server"]
    return c, (r["n"] * (a + b * us) + e + g * ud) * 1e-6


def factor(p, m):
    return max(p / m, m / p) if p > 0 and m > 0 else math.inf


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated families")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--refit", action="store_true",
                    help="measure nothing: refit every family from the stored rows")
    args = ap.parse_args(argv)
    measure_fams = ([] if args.refit else list(FAMILIES) if args.only is None
                    else args.only.split(","))
    stored = {}
    if os.path.exists(ROWS):
        with open(ROWS) as f:
            stored = json.load(f)
    fits, report, t_start = {}, [], time.time()
    for fam in measure_fams:
        print(f"{fam}: train", flush=True)
        train = rows(fam, TRAIN, args.repeats)
        print(f"{fam}: held out", flush=True)
        stored[fam] = {"train": train, "held_out": rows(fam, HELD_OUT, args.repeats)}
        if args.write:
            with open(ROWS, "w") as f:
                json.dump(stored, f)
    fams = [f for f in FAMILIES if f in stored]
    for fam in fams:
        train, test = stored[fam]["train"], stored[fam]["held_out"]
        for r in train + test:           # features as the advisor computes them now
            r["features"] = list(advisor.cost_features(make(fam, r["k"], r["epsilon"])))
        const = fit(train)
        fits[fam] = const
        for split, rs in (("train", train), ("held-out", test)):
            for r in rs:
                pc, ps = predict(const, r)
                report.append({**r, "split": split, "pred_client_us": pc, "pred_server_s": ps,
                               "client_factor": factor(pc, r["client_us"]),
                               "server_factor": factor(ps, r["server_s"])})
    lines = ["# Cost model of the advisor: fit and held-out error",
             "",
             f"`python benchmarks/cost_model.py --repeats {args.repeats} --write` "
             f"({platform.machine()}, numpy {np.__version__}, one thread, shared 2-core machine; "
             f"{time.time() - t_start:.0f} s). Model per family (µs): client = a + b·u_c, "
             "server = n·(c + d·u_s) + e + g·u_d, work units from `advisor.cost_features`; "
             "NNLS on relative residuals over the train cells "
             f"(k ∈ {{128, 2048, 16384}} × ε ∈ {{1, 4}} × n ∈ {{2·10⁴, 10⁵}}); held-out cells "
             "(k, ε, n) = " + ", ".join(f"({k}, {e}, {n})" for k, e, n in HELD_OUT)
             + " are predicted only. n is capped for OLH (n·k ≤ 1.5·10⁸) and SS/MSS "
             "(n·ω ≤ 2·10⁷). Factor = max(pred/meas, meas/pred); target ≤ 2.",
             "",
             "| family | client a, b | server c, d, e, g | held-out client factor (max) | "
             "held-out server factor (max) | train client / server (max) |",
             "|---|---|---|---|---|---|"]
    for fam in fams:
        rs = [r for r in report if r["family"] == fam]
        ho = [r for r in rs if r["split"] == "held-out"]
        tr = [r for r in rs if r["split"] == "train"]
        c, s = fits[fam]["client"], fits[fam]["server"]
        lines.append(f"| {fam} | {c[0]:.3g}, {c[1]:.3g} | " + ", ".join(f"{v:.3g}" for v in s)
                     + f" | {max(r['client_factor'] for r in ho):.2f} | "
                     f"{max(r['server_factor'] for r in ho):.2f} | "
                     f"{max(r['client_factor'] for r in tr):.2f} / "
                     f"{max(r['server_factor'] for r in tr):.2f} |")
    ho = [r for r in report if r["split"] == "held-out"]
    worst_c = max(r["client_factor"] for r in ho)
    worst_s = max(r["server_factor"] for r in ho)
    within = sum(r["client_factor"] <= 2 and r["server_factor"] <= 2 for r in ho)
    lines += ["", f"Held out, all families: worst client factor {worst_c:.2f}, worst server "
              f"factor {worst_s:.2f}; {within}/{len(ho)} cells have both within 2.", "",
              "## Held-out cells", "",
              "| family | k | ε | n | client µs meas / pred | server s meas / pred |",
              "|---|---|---|---|---|---|"]
    for r in ho:
        lines.append(f"| {r['family']} | {r['k']} | {r['epsilon']} | {r['n']} | "
                     f"{r['client_us']:.3g} / {r['pred_client_us']:.3g} | "
                     f"{r['server_s']:.3g} / {r['pred_server_s']:.3g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with open(os.path.join(ROOT, "benchmarks", "results", "cost_model.md"), "w") as f:
            f.write(text)
        with open(os.path.join(ROOT, "protocols", "cost_constants.py"), "w") as f:
            f.write('"""Fitted cost-model constants read by ``protocols.advisor`` (written by '
                    'benchmarks/cost_model.py --write;\nfit and held-out error in '
                    'benchmarks/results/cost_model.md). Per family, µs: client = a + b·u_c '
                    '(``client``: [a, b]);\nserver = n·(c + d·u_s) + e + g·u_d (``server``: '
                    '[c, d, e, g]); units from ``advisor.cost_features``."""\n')
            f.write("FIT = " + json.dumps(fits, indent=4) + "\n")


if __name__ == "__main__":
    main()
