"""Fit the advisor's cost model to measurements and report its error on held-out cells (issue 15).

    python benchmarks/cost_model.py [--repeats 2] [--only FAMILIES] [--refit] [--write]
    python benchmarks/cost_model.py --calibrate     # the per-unit constants of advisor's models

For every cost family (``protocols.advisor.family_of``: grr, ue, lh, hr, ss, mss, pgr, ...) and
every cell (k, ε, n) it times, best of ``--repeats`` (more while a side totals < MIN_SECONDS),
one thread, the client and the server separately:
  client: ``proto.randomize(items, rng)`` on n Zipf(1.1) items → µs per report;
  server: ``add_reports`` of those n reports + ``estimate(stderr=False)`` → seconds.
Times are the process's CPU time (``time.process_time``; the code is single-threaded, so on an
idle machine CPU time = wall time, while on the shared machine wall time also counts the waits
for a core: minima of wall time over repeats still varied ~2x between runs); wall-time minima
are stored and reported beside them.
EXTRA protocols (cmss, sue) are measured on the held-out cells only and predicted with their
family's constants (css, ue): checks that a family's fit carries over to its other members.
Model (µs), linear in the work units of ``advisor.cost_features(proto, n) = (u_c, u_s, u_d)``:
  client = a + b·u_c;  server = n·(c + d·u_s) + e + g·u_d,
fitted per family by non-negative least squares on relative residuals (rows divided by the
measurement), on the TRAIN cells; the HELD-OUT cells (other k, ε and n) are only predicted. The
report gives every held-out ratio predicted/measured and the worst factor max(r, 1/r) per family
(target: within 2). ``--write`` stores the constants in protocols/cost_constants.py (read by the
advisor) and the report in benchmarks/results/cost_model.md.
The machine is shared (2 cores, several jobs): minima of repeats are the least disturbed runs;
the report states the load average.
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
# Held-out-only protocols: protocol id -> the family whose fit predicts them.
EXTRA = {"cmss": "css", "sue": "ue"}
# Measured rows of every family, so ``--only`` re-measures some families and refits all.
ROWS = os.path.join(ROOT, "benchmarks", "results", "cost_model_rows.json")
TRAIN = [(k, e, n) for k in (128, 2048, 16384) for e in (1.0, 4.0) for n in (20_000, 100_000)]
HELD_OUT = [(700, 2.0, 50_000), (6000, 3.0, 30_000), (12000, 1.5, 60_000), (300, 5.0, 150_000)]
# OLH's server is Θ(n·k) hashes (~3 ns each): cells are capped at this many (report, item) pairs
# by shrinking n, so one cell stays ~1 s on the shared machine.
LH_PAIRS = 1.5e8
MIN_SECONDS = 0.5                # per side (client, server)
MAX_REPEATS = 15
# SS-type reports of the client batch are capped at this many values (memory and time).
SS_VALUES = 2e7


def make(name: str, k: int, eps: float):
    """The protocol measured for a family (or an EXTRA protocol id), as the advisor builds it."""
    pid = FAMILIES.get(name, name)
    if pid in ("mss", "cmss"):            # the planner's usual pick: the 2 largest primes <= k
        moduli = tuple(int(p) for p in primes_up_to(k)[-2:])
        return get_protocol_class(pid)(k=k, epsilon=eps, moduli=moduli)
    if pid in ("oue", "sue"):             # the advisor ranks unary encodings with encoding="auto"
        return get_protocol_class(pid)(k=k, epsilon=eps, encoding="auto")
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


def _timed(f):
    w0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return out, time.process_time() - c0, time.perf_counter() - w0


def measure(proto, n: int, repeats: int, seed: int = 0) -> dict:
    """Client µs per report and server seconds, CPU and wall, minima over repeats: at least
    ``repeats`` runs per side, more (up to MAX_REPEATS) while that side totals < MIN_SECONDS
    (short cells are the noisiest on a shared machine)."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, proto.k + 1) ** 1.1
    items = rng.choice(proto.k, n, p=w / w.sum())
    proto.randomize(items[:1000], rng)                     # warm lazy tables (PGR geometry, ...)
    proto.estimate(proto.add_reports(proto.create_accumulator(), proto.randomize(items[:1000], rng)),
                   stderr=False)
    def server():
        proto.estimate(proto.add_reports(proto.create_accumulator(), batch), stderr=False)

    out, batch = {}, None
    for side in ("client", "server"):
        cpu, wall, spent, done = [], [], 0.0, 0
        while done < repeats or (spent < MIN_SECONDS and done < MAX_REPEATS):
            done += 1
            if side == "client":
                batch = None                                   # free the previous batch first
                batch, c, w = _timed(lambda: proto.randomize(items, rng))
            else:
                _, c, w = _timed(server)
            cpu.append(c)
            wall.append(w)
            spent += w
        scale = 1e6 / n if side == "client" else 1.0
        key = "client_us" if side == "client" else "server_s"
        out[key] = min(cpu) * scale
        out[key.replace("_", "_wall_", 1)] = min(wall) * scale
        out[key + "_runs"] = [round(v * scale, 9) for v in cpu]
    return out


def rows(name, cells, repeats):
    out = []
    for k, e, n in cells:
        proto = make(name, k, e)
        n = cell_n(proto, n)
        m = measure(proto, n, repeats)
        out.append({"family": name, "k": k, "epsilon": e, "n": n,
                    "features": list(advisor.cost_features(proto, n)), **m})
        print(f"  {name:4} k={k:6} eps={e:3} n={n:7}  client {m['client_us']:9.3f} us "
              f"(wall {m['client_wall_us']:9.3f})  server {m['server_s']:8.4f} s "
              f"(wall {m['server_wall_s']:8.4f})", flush=True)
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


def _cpu_best(f, reps=5):
    best = math.inf
    for _ in range(reps):
        c0 = time.process_time()
        f()
        best = min(best, time.process_time() - c0)
    return best


def calibrate():
    """The per-unit CPU costs behind advisor's UE_*, SS_SORT_*, CSS_*, BINCOUNT_* constants (NNLS on
    relative error per path over a small grid; the constants are set by hand from these):
    printed, and returned as lines."""
    from privfreq.protocols import ss_sampler
    from privfreq.protocols import ue_sampler as u
    from privfreq.protocols.compressed_ss import expand_seeds
    rng = np.random.default_rng(0)
    paths, out = {}, []
    for pid, k, e, enc in ([("oue", k, e, enc) for k in (128, 700, 2048, 6000, 16384, 65536)
                            for e in (1.0, 3.0, 5.0) for enc in ("bitmap", "indices")]
                           + [("sue", 2048, 4.0, "bitmap"), ("sue", 16384, 2.0, "bitmap")]):
        p = get_protocol_class(pid)(k=k, epsilon=e, encoding=enc)
        n = int(min(100_000, max(1000, 3e7 / k)))
        x = rng.integers(0, k, n)
        batch = p.randomize(x, rng)
        c = _cpu_best(lambda: p.randomize(x, rng)) / n * 1e9
        s = _cpu_best(lambda: p.add_reports(p.create_accumulator(), batch)) / n * 1e9
        width, words = u._sparse_width(k, p.q), math.ceil(k / 64)
        if enc == "indices":
            path, cu, su = "indices", [1, width], [(1 + p.cap), (1 + p.cap) * (k + 1) / 2**17]
        elif u.use_sparse(k, p.q):
            path, cu = "sparse bitmap", [1, width, k // 32 + 1]
            su = [words, words * bool(((k + 7) // 8) % 8)]
        else:
            path, cu, su = "dense bitmap", [1, words], [words, words * bool(((k + 7) // 8) % 8)]
        paths.setdefault(path, []).append((cu, c, su, s))
    names = {"indices": (["per report", "per gap"], ["per slot", "per slot·(k+1)/2^17"]),
             "sparse bitmap": (["per report", "per gap", "per 32-bit word"],
                               ["per word", "per padded word"]),
             "dense bitmap": (["per report", "per 64-bit word"], ["per word", "per padded word"])}
    for path, rs in paths.items():
        for side, (col, yi) in (("client", (0, 1)), ("server", (2, 3))):
            a = np.array([r[col] for r in rs], float)
            y = np.array([r[yi] for r in rs])
            coef, _ = nnls(a / y[:, None], np.ones(len(y)))
            worst = max(np.max(a @ coef / y), np.max(y / (a @ coef)))
            label = names[path][0 if side == "client" else 1]
            out.append(f"ue {path:13} {side}: " + ", ".join(
                f"{v:.2f} ns {lab}" for v, lab in zip(coef, label)) + f"  (worst {worst:.2f}x)")
            print(out[-1], flush=True)
    rows = []
    for k, e in [(128, 4), (300, 5), (128, 1), (700, 2), (2048, 4), (300, 1), (6000, 3),
                 (16384, 4), (2048, 1), (12000, 1.5), (16384, 1)]:
        w = get_protocol_class("css")(k=k, epsilon=e).omega
        draws = max(w + 8 if w >= k else int(1.1 * k * math.log(k / (k - w + 0.5))) + 16, w)
        n = min(5000, int(2e7 / draws))
        seeds = rng.integers(0, 1 << 62, n)
        rows.append((draws, _cpu_best(lambda: expand_seeds(seeds, k, w)) / n * 1e9))
    a = np.array([[d * math.log2(d), 1.0] for d, _ in rows])
    y = np.array([t for _, t in rows])
    coef, _ = nnls(a / y[:, None], np.ones(len(y)))
    worst = max(np.max(a @ coef / y), np.max(y / (a @ coef)))
    out.append(f"css expand_seeds: {coef[0]:.2f} ns per L·log2 L + {coef[1]:.0f} ns per seed "
               f"(L = {min(d for d, _ in rows)}..{max(d for d, _ in rows)}; worst {worst:.2f}x)")
    print(out[-1], flush=True)
    rows = []
    for k, e in [(500, 3.0), (1024, 3.0), (1024, 4.0), (3000, 2.5), (3000, 3.5), (4096, 3.0),
                 (4096, 4.5), (8192, 3.0), (8192, 4.0), (10000, 3.5), (16000, 3.2)]:
        p = get_protocol_class("ss")(k=k, epsilon=e)
        w = p.ss.omega
        if ss_sampler._use_bitmap(k, w):
            continue
        n = int(min(100_000, 1e7 / w))
        x = rng.integers(0, k, n)
        rows.append((advisor._ss_resorts(k, w),
                     _cpu_best(lambda: p.randomize(x, rng)) / n / w * 1e9))
    a = np.array([[1.0, r] for r, _ in rows])
    y = np.array([t for _, t in rows])
    coef, _ = nnls(a / y[:, None], np.ones(len(y)))
    worst = max(np.max(a @ coef / y), np.max(y / (a @ coef)))
    out.append(f"ss sort path (int16 keys, k = 500..16000, ε = 2.5..4.5): {coef[0]:.2f} ns per "
               f"element + {coef[1]:.2f} ns per element and expected re-sort (worst {worst:.2f}x)")
    print(out[-1], flush=True)
    for mvals in (1, 2, 4, 6, 8, 12, 20):
        r = rng.integers(0, 2048, mvals * 10**6)
        t = _cpu_best(lambda: np.bincount(r, minlength=2048)) / r.size * 1e9
        out.append(f"bincount of {mvals}·10⁶ values in [2048]: {t:.2f} ns per value")
        print(out[-1], flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default=None,
                    help="comma-separated families (or EXTRA protocols) to re-measure; the "
                         "others keep their stored rows, every family is refitted")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--refit", action="store_true",
                    help="measure nothing: refit every family from the stored rows")
    ap.add_argument("--calibrate", action="store_true",
                    help="only print the per-unit costs behind advisor's UE_*, SS_SORT_*, CSS_* "
                         "and BINCOUNT_* constants (with --write: kept for the report)")
    args = ap.parse_args(argv)
    if args.calibrate:
        t0, load = time.time(), os.getloadavg()
        lines = calibrate()
        if args.write:
            stored = {}
            if os.path.exists(ROWS):
                with open(ROWS) as f:
                    stored = json.load(f)
            stored["_calibration"] = {
                "command": "python benchmarks/cost_model.py "
                           + " ".join(argv if argv is not None else sys.argv[1:]),
                "load": [round(v, 2) for v in load + os.getloadavg()],
                "seconds": round(time.time() - t0), "lines": lines}
            with open(ROWS, "w") as f:
                json.dump(stored, f)
        return
    names = list(FAMILIES) + list(EXTRA)
    measure_names = ([] if args.refit else names if args.only is None
                     else args.only.split(","))
    for name in measure_names:
        if name not in names:
            ap.error(f"--only: unknown family {name!r}; one of {names}")
    stored = {}
    if os.path.exists(ROWS):
        with open(ROWS) as f:
            stored = json.load(f)
    fits, report, t_start = {}, [], time.time()
    load = [os.getloadavg()]
    cmd = "python benchmarks/cost_model.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in measure_names:
        load_before = os.getloadavg()
        if name in FAMILIES:
            print(f"{name}: train", flush=True)
            train = rows(name, TRAIN, args.repeats)
        print(f"{name}: held out", flush=True)
        held = rows(name, HELD_OUT, args.repeats)
        stored[name] = ({"train": train, "held_out": held} if name in FAMILIES
                        else {"family": EXTRA[name], "held_out": held})
        load.append(os.getloadavg())
        stored[name]["measured"] = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"),
                                    "load": [round(v, 2) for v in load_before + load[-1]]}
        if args.write:
            with open(ROWS, "w") as f:
                json.dump(stored, f)
    fams = [f for f in FAMILIES if f in stored]
    for fam in fams:
        train = stored[fam]["train"]
        for r in train + stored[fam]["held_out"]:   # features as the advisor computes them now
            r["features"] = list(advisor.cost_features(make(fam, r["k"], r["epsilon"]),
                                                       r["n"]))
        fits[fam] = fit(train)
    for name in fams + [x for x in EXTRA if x in stored and EXTRA[x] in fits]:
        const = fits[EXTRA.get(name, name)]
        splits = [("train", stored[name]["train"])] if name in FAMILIES else []
        for split, rs in splits + [("held-out", stored[name]["held_out"])]:
            for r in rs:
                r["features"] = list(advisor.cost_features(make(name, r["k"], r["epsilon"]),
                                                           r["n"]))
                pc, ps = predict(const, r)
                report.append({**r, "split": split, "pred_client_us": pc, "pred_server_s": ps,
                               "client_factor": factor(pc, r["client_us"]),
                               "server_factor": factor(ps, r["server_s"]),
                               "client_wall_factor": factor(pc, r.get("client_wall_us", 0)),
                               "server_wall_factor": factor(ps, r.get("server_wall_s", 0))})
    loads = [v for tri in load for v in tri]
    provenance = {}
    for name in fams + [x for x in EXTRA if x in stored]:
        m = stored[name].get("measured", {"command": "(before measurement records)"})
        provenance.setdefault((m["command"], m.get("date", "")), []).append(
            (name, m.get("load", [])))
    lines = ["# Cost model of the advisor: fit and held-out error",
             "",
             f"`{cmd}` ({platform.machine()}, numpy {np.__version__}, one thread, shared 2-core "
             f"machine, load average {min(loads):.1f}–{max(loads):.1f} during the run; "
             f"{time.time() - t_start:.0f} s; measured: {', '.join(measure_names) or 'nothing'}"
             + ("" if set(measure_names) >= set(fams) else
                ", the other rows from benchmarks/results/cost_model_rows.json") + "). "
             "Times are minima over repeats of the process's CPU time (single-threaded code: on "
             "an idle machine equal to wall time; wall minima, which also count the waits for a "
             "core under this load, are in the rows file and in the last columns below). "
             "Model per family (µs): client = a + b·u_c, "
             "server = n·(c + d·u_s) + e + g·u_d, work units from `advisor.cost_features`; "
             "NNLS on relative residuals over the train cells "
             f"(k ∈ {{128, 2048, 16384}} × ε ∈ {{1, 4}} × n ∈ {{2·10⁴, 10⁵}}); held-out cells "
             "(k, ε, n) = " + ", ".join(f"({k}, {e}, {n})" for k, e, n in HELD_OUT)
             + " are predicted only, and so are "
             + ", ".join(f"{x} (with {f}'s constants)" for x, f in EXTRA.items())
             + " on the held-out cells. The ue family is measured as OUE with encoding=\"auto\" "
             "(as the advisor ranks it). n is capped for OLH/PI-RAPPOR (n·k ≤ 1.5·10⁸), "
             "SS/MSS (n·ω ≤ 2·10⁷) and css/cmss (n ≤ 5000). "
             "Factor = max(pred/meas, meas/pred); target ≤ 2.",
             ""]
    for (c, date), got in provenance.items():
        ls = [v for _, lo in got for v in lo]
        lines.append(f"Rows of {', '.join(x for x, _ in got)}: measured by `{c}` ({date}"
                     + (f", load average {min(ls):.1f}–{max(ls):.1f}" if ls else "") + ").")
    lines += ["",
             "| family | client a, b | server c, d, e, g | held-out client factor (max) | "
             "held-out server factor (max) | train client / server (max) |",
             "|---|---|---|---|---|---|"]
    for name in fams + [x for x in EXTRA if x in stored and EXTRA[x] in fits]:
        rs = [r for r in report if r["family"] == name]
        ho = [r for r in rs if r["split"] == "held-out"]
        tr = [r for r in rs if r["split"] == "train"]
        if name in fits:
            c, s = fits[name]["client"], fits[name]["server"]
            head = f"| {name} | {c[0]:.3g}, {c[1]:.3g} | " + ", ".join(f"{v:.3g}" for v in s)
            tail = (f"{max(r['client_factor'] for r in tr):.2f} / "
                    f"{max(r['server_factor'] for r in tr):.2f}")
        else:
            head, tail = f"| {name} | ({EXTRA[name]}'s) | ({EXTRA[name]}'s)", "(not fitted)"
        lines.append(head + f" | {max(r['client_factor'] for r in ho):.2f} | "
                     f"{max(r['server_factor'] for r in ho):.2f} | {tail} |")
    ho = [r for r in report if r["split"] == "held-out"]
    worst_c = max(r["client_factor"] for r in ho)
    worst_s = max(r["server_factor"] for r in ho)
    within = sum(r["client_factor"] <= 2 and r["server_factor"] <= 2 for r in ho)
    within_w = sum(r["client_wall_factor"] <= 2 and r["server_wall_factor"] <= 2 for r in ho)
    lines += ["", f"Held out, all families and extra protocols (CPU time): worst client factor "
              f"{worst_c:.2f}, worst server factor {worst_s:.2f}; {within}/{len(ho)} cells have "
              f"both within 2 ({within_w}/{len(ho)} against wall-time minima).", "",
              "## Held-out cells", "",
              "Measured CPU time (spread: largest/smallest of the repeats) / predicted; "
              "the factor; wall-time minimum and its factor.", "",
              "| family | k | ε | n | client µs meas (spread) / pred | factor | server s meas "
              "(spread) / pred | factor | wall client µs, factor | wall server s, factor |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def spread(r, key):
        runs = r.get(key + "_runs") or [r[key]]
        return max(runs) / min(runs)

    for r in ho:
        lines.append(f"| {r['family']} | {r['k']} | {r['epsilon']} | {r['n']} | "
                     f"{r['client_us']:.3g} ({spread(r, 'client_us'):.2f}) / "
                     f"{r['pred_client_us']:.3g} | {r['client_factor']:.2f} | "
                     f"{r['server_s']:.3g} ({spread(r, 'server_s'):.2f}) / "
                     f"{r['pred_server_s']:.3g} | {r['server_factor']:.2f} | "
                     f"{r.get('client_wall_us', math.nan):.3g}, {r['client_wall_factor']:.2f} | "
                     f"{r.get('server_wall_s', math.nan):.3g}, {r['server_wall_factor']:.2f} |")
    cal = stored.get("_calibration")
    if cal:
        lines += ["", "## Per-unit constants", "",
                  f"`{cal['command']}` (load average {min(cal['load']):.1f}–"
                  f"{max(cal['load']):.1f}; CPU-time minima): the measurements behind "
                  "`advisor`'s hand-set UE_*, SS_SORT_*, CSS_* and BINCOUNT_* constants "
                  f"(UE_NS_PER_GAP = {advisor.UE_NS_PER_GAP}, UE_NS_PER_PACKED_GAP = "
                  f"{advisor.UE_NS_PER_PACKED_GAP}, UE_NS_PER_PACKED_WORD = "
                  f"{advisor.UE_NS_PER_PACKED_WORD}, UE_NS_PER_DENSE_WORD = "
                  f"{advisor.UE_NS_PER_DENSE_WORD}, UE_NS_PER_COUNT_WORD = "
                  f"{advisor.UE_NS_PER_COUNT_WORD}, UE_NS_PER_PAD_WORD = "
                  f"{advisor.UE_NS_PER_PAD_WORD}, UE_NS_PER_SLOT = {advisor.UE_NS_PER_SLOT}, "
                  f"UE_INDEX_CHUNK_NS = {advisor.UE_INDEX_CHUNK_NS}; CSS_NS_PER_DRAW_LOG = "
                  f"{advisor.CSS_NS_PER_DRAW_LOG}, CSS_NS_PER_TRIAL = "
                  f"{advisor.CSS_NS_PER_TRIAL}, CSS_NS_PER_EXPANSION = "
                  f"{advisor.CSS_NS_PER_EXPANSION}; SS_SORT_NS_PER_ELEMENT = "
                  f"{advisor.SS_SORT_NS_PER_ELEMENT}, SS_SORT_NS_PER_RESORT = "
                  f"{advisor.SS_SORT_NS_PER_RESORT}; BINCOUNT_FAST_VALUES = "
                  f"{advisor.BINCOUNT_FAST_VALUES:g}, BINCOUNT_SLOW_VALUES = "
                  f"{advisor.BINCOUNT_SLOW_VALUES:g}, BINCOUNT_BIG_EXTRA = "
                  f"{advisor.BINCOUNT_BIG_EXTRA}). The fit above scales them per family "
                  "(b, d).", ""] + [f"    {x}" for x in cal["lines"]]
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
                    '[c, d, e, g]); units from ``advisor.cost_features``; fitted to CPU-time '
                    'minima."""\n')
            f.write("FIT = " + json.dumps(fits, indent=4) + "\n")


if __name__ == "__main__":
    main()
