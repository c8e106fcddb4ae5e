"""Server decode and planner benchmark (issue 5, "Throughput at scale").

    python benchmarks/decode.py [--quick] [--output benchmarks/results/decode_raw.md]

Prints three markdown tables; every case runs in its own subprocess, which reports its wall time
(time.perf_counter) and its peak resident set size (ru_maxrss of that process, so one case's
memory never hides another's):
  (a) MSS decode time and peak RSS vs k = 2^10, 2^12, ..., 2^20 (ε = 2, n = 10^6), with and
      without per-item standard errors, for the planner's ℓ = 2 shape (direct per-component
      solve) and its ℓ = 4 shape (LSMR + stochastic stderr on a giant component);
  (b) MSS vs PGR decode time at k = 22000, n = 10^4, every ε of SPEC §5, and their ratio;
  (c) planner time at k = 22000 and k = 2^20.
"Decode" is counts -> estimate: MSS = ``mss_decoder.decode`` (per-block debias + LSMR; "+se" adds the
per-item standard errors, exact dense for k <= 4096, stochastic CG diagonal above); PGR =
``estimate`` (the O(K·q·t) Fourier support sums + debias + its closed-form stderr). One-time set-up
(PGR geometry tables, MSS design and rank check) is excluded from the steady-state figure (best of
REPEATS calls) and shown separately as the first call.

Counts are simulated cheaply: items are drawn from Zipf(1.1) on [k]; PGR's accumulator comes from
its real randomizer; MSS's is sampled from the exact per-cell marginals
``C_j[r] ~ Bin(c_jr, p_j) + Bin(n_j − c_jr, q_j)`` (c_jr = users of block j with residue r), since
running the SS randomizer at k = 2^20 means ~10^5 subset members per report. Decode cost does not
depend on the count values (LSMR iterations depend on the design, not on the data).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

REPEATS = 5
PAPER_REPEATS = 21   # (b) calls are ms-scale: more repeats so one load spike cannot set the best
EPSILONS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)   # SPEC §5
K_PAPER = 22000
MODULI_PAPER = (20509, 20983)   # planner.plan(22000, 2, ell=2, max_mse_factor=1.3), as in evaluation


def _zipf_counts(k, n, rng, s=1.1):
    import numpy as np
    f = np.arange(1, k + 1, dtype=np.float64) ** -s
    return rng.multinomial(n, f / f.sum())


def _mss_counts(proto, item_counts, rng):
    """An MSS accumulator sampled from the exact per-cell marginals (see module docstring)."""
    import numpy as np
    acc = proto.create_accumulator()
    n = int(item_counts.sum())
    # each user picks j uniformly: split every item's count multinomially over the ℓ blocks
    per_block = rng.multinomial(item_counts, np.full(proto.ell, 1 / proto.ell))
    for j, c in enumerate(proto.blocks):
        cj = np.bincount(np.arange(proto.k) % c.m, weights=per_block[:, j],
                         minlength=c.m).astype(np.int64)
        nj = int(per_block[:, j].sum())
        sl = slice(proto.offsets[j], proto.offsets[j + 1])
        acc.counts[sl] = rng.binomial(cj, c.p) + rng.binomial(nj - cj, c.q)
        acc.n_block[j] = nj
    assert acc.n_block.sum() == n
    return acc


def _primes_near(targets):
    from privfreq.protocols.planner import primes_up_to
    import numpy as np
    primes = primes_up_to(max(targets) + 1000)
    out = []
    for t in targets:
        i = int(np.searchsorted(primes, t))
        while int(primes[i]) in out:
            i += 1
        out.append(int(primes[i]))
    return tuple(out)


def _best_of(fn, repeats=REPEATS):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


SHAPES = {   # moduli as fractions of k: the planner's ε = 2 picks at k = 22000
    "l2": (20509 / 22000, 20983 / 22000),                               # ell=2, factor 1.3
    "l4": (17099 / 22000, 17911 / 22000, 19727 / 22000, 20101 / 22000),  # ell 2-4, factor 1.3
}


def case_scale(k: int, eps: float, n: int, seed: int, shape: str = "l2") -> dict:
    """(a): MSS decode at universe size k, moduli the nearest primes to ``SHAPES[shape]·k``."""
    import numpy as np
    from privfreq.protocols import mss_decoder
    from privfreq.protocols.mss import ModularSubsetSelection as MSS
    rng = np.random.default_rng(seed)
    moduli = _primes_near([round(a * k) for a in SHAPES[shape]])
    t = time.perf_counter()
    proto = MSS(k, eps, moduli)
    setup = time.perf_counter() - t
    acc = _mss_counts(proto, _zipf_counts(k, n, rng), rng)
    t = time.perf_counter()
    first = mss_decoder.decode(proto, acc, stderr=False)
    first_s = time.perf_counter() - t
    bare, est = _best_of(lambda: mss_decoder.decode(proto, acc, stderr=False))
    with_se, est_se = _best_of(lambda: mss_decoder.decode(proto, acc), repeats=2)
    return {"k": k, "moduli": list(moduli), "eps": eps, "n": n, "setup_s": setup,
            "first_s": first_s, "decode_s": bare, "decode_se_s": with_se,
            "iterations": est.diagnostics["iterations"], "solver": est.diagnostics["solver"],
            "components_max": max(proto.design.components[0]),
            "giant_items": int(proto.design.components[1].size),
            "stderr_kind": est_se.diagnostics["stderr"],
            "finite": bool(np.isfinite(est_se.frequencies).all()
                           and np.isfinite(est_se.stderr).all())}


def case_paper(eps: float, n: int, seed: int) -> dict:
    """(b): MSS vs PGR decode at k = 22000, n reports, one ε; calls interleaved."""
    import numpy as np
    from privfreq.protocols import mss_decoder
    from privfreq.protocols.mss import ModularSubsetSelection as MSS
    from privfreq.protocols.pgr import ProjectiveGeometryResponse as PGR
    rng = np.random.default_rng(seed)
    item_counts = _zipf_counts(K_PAPER, n, rng)
    items = np.repeat(np.arange(K_PAPER), item_counts)
    mss = MSS(K_PAPER, eps, MODULI_PAPER)
    acc_m = _mss_counts(mss, item_counts, rng)
    pgr = PGR(K_PAPER, eps)
    t = time.perf_counter()
    _ = pgr.geometry
    pgr_setup = time.perf_counter() - t
    acc_p = pgr.add_reports(pgr.create_accumulator(), pgr.randomize(items, rng))
    t = time.perf_counter()
    mss_decoder.decode(mss, acc_m, stderr=False)
    mss_first = time.perf_counter() - t
    mss_t, pgr_t, mss_se_t = [], [], []
    for _ in range(PAPER_REPEATS):   # interleaved, so load from other processes hits both alike
        t = time.perf_counter()
        mss_decoder.decode(mss, acc_m, stderr=False)
        mss_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        pgr.estimate(acc_p)
        pgr_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        mss_decoder.decode(mss, acc_m)
        mss_se_t.append(time.perf_counter() - t)
    return {"eps": eps, "K": pgr.K, "q": pgr.q, "t": pgr.t, "pgr_setup_s": pgr_setup,
            "mss_first_s": mss_first, "mss_s": min(mss_t), "mss_se_s": min(mss_se_t),
            "pgr_s": min(pgr_t)}


def case_plan(k: int, eps: float, kwargs: dict) -> dict:
    """(c): one planner call."""
    from privfreq.protocols import planner
    t = time.perf_counter()
    c = planner.plan(k, eps, top=1, **kwargs)[0]
    return {"k": k, "eps": eps, "kwargs": kwargs, "plan_s": time.perf_counter() - t,
            "moduli": list(c.moduli), "mse_ratio_ss": c.mse_ratio_ss,
            "mse_rel_error": c.mse_rel_error, "condition_number": c.condition_number,
            "bits": c.bits}


CASES = {"scale": case_scale, "paper": case_paper, "plan": case_plan}


def _run_child(name: str, **kwargs) -> dict:
    """Run one case in a fresh interpreter; it prints one JSON line with its own peak RSS."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                          json.dumps(kwargs)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"case {name} {kwargs} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(name: str, kwargs: str) -> None:
    res = CASES[name](**json.loads(kwargs))
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(res))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="k up to 2^16, 3 ε, no 2^20 planner")
    p.add_argument("--output", default=None, help="also write the tables to this markdown file")
    p.add_argument("--parts", default="abc", help="which tables to run (subset of 'abc')")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(*args.child)
        return
    lines = []

    def emit(s=""):
        print(s, flush=True)
        lines.append(s)

    emit(f"Command: `python benchmarks/decode.py{' --quick' if args.quick else ''}`  "
         f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus; best of {REPEATS} calls)")
    if "a" in args.parts:
        _scale_table(args, emit)
    if "b" in args.parts:
        _paper_table(args, emit)
    if "c" in args.parts:
        _plan_table(args, emit)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write("\n".join(lines) + "\n")


def _scale_table(args, emit):
    emit()
    emit("(a) MSS decode vs k (ε = 2, n = 10^6 sampled counts); first call includes the one-time "
         "item-graph components and rank check")
    emit()
    emit("| k | moduli | solver (iters) | largest small comp. / giant items | decode s | "
         "decode+se s | se | first call s | peak RSS MB |")
    emit("|---|---|---|---|---|---|---|---|---|")
    ks = [2 ** e for e in range(10, 17 if args.quick else 21, 2)]
    cases = [(k, "l2") for k in ks] + [(k, "l4") for k in ks if k >= 2 ** 14]
    for k, shape in cases:
        r = _run_child("scale", k=k, eps=2.0, n=10 ** 6, seed=k, shape=shape)
        emit(f"| {k} | {','.join(map(str, r['moduli']))} | {r['solver']} ({r['iterations']}) | "
             f"{r['components_max']} / {r['giant_items']} | {r['decode_s']:.4f} | "
             f"{r['decode_se_s']:.3f} | {r['stderr_kind']} | {r['first_s']:.3f} | "
             f"{r['peak_rss_mb']:.0f} |")
        assert r["finite"], r


def _paper_table(args, emit):
    emit()
    emit(f"(b) MSS vs PGR decode at k = {K_PAPER}, n = 10^4 (MSS moduli "
         f"{','.join(map(str, MODULI_PAPER))})")
    emit()
    emit("| ε | PGR K (q, t) | PGR s | MSS s | PGR/MSS | MSS+se s | PGR/(MSS+se) | "
         "target 50x | peak RSS MB |")
    emit("|---|---|---|---|---|---|---|---|---|")
    for eps in ((1.0, 4.5, 5.0) if args.quick else EPSILONS):
        r = _run_child("paper", eps=eps, n=10 ** 4, seed=int(eps * 10))
        ratio, ratio_se = r["pgr_s"] / r["mss_s"], r["pgr_s"] / r["mss_se_s"]
        verdict = "met" if ratio >= 50 else f"missed ({50 / ratio:.1f}x short)"
        emit(f"| {eps:g} | {r['K']} ({r['q']}, {r['t']}) | {r['pgr_s']:.4f} | {r['mss_s']:.4f} | "
             f"{ratio:.1f} | {r['mss_se_s']:.4f} | {ratio_se:.2f} | {verdict} | "
             f"{r['peak_rss_mb']:.0f} |")


def _plan_table(args, emit):
    emit()
    emit("(c) planner time (top = 1, ε = 2)")
    emit()
    emit("| k | call | seconds | moduli | MSE/SS (rel. err) | cond | peak RSS MB |")
    emit("|---|---|---|---|---|---|---|")
    plans = [(K_PAPER, {"ell": 2, "max_mse_factor": 1.3}), (K_PAPER, {"max_mse_factor": 1.3}),
             (K_PAPER, {})]
    if not args.quick:
        plans += [(2 ** 20, {"ell": 2, "max_mse_factor": 1.3}), (2 ** 20, {})]
    for k, kw in plans:
        r = _run_child("plan", k=k, eps=2.0, kwargs=kw)
        call = ", ".join(f"{a}={b}" for a, b in kw.items()) or "defaults (ℓ ∈ {2,3,4}, by MSE)"
        emit(f"| {k} | {call} | {r['plan_s']:.2f} | {','.join(map(str, r['moduli']))} | "
             f"{r['mse_ratio_ss']:.4f} ({r['mse_rel_error']:.1e}) | "
             f"{r['condition_number']:.2f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
