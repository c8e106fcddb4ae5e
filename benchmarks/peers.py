"""privfreq side by side with pure-ldp 1.2.0 and multi-freq-ldpy 0.2.5 (issue 17, part 3).

One command from a fresh clone (any Python 3.11; this parent process uses the standard library only):

    python benchmarks/peers.py            # full settings, writes benchmarks/results/peers.md
    python benchmarks/peers.py --quick    # n = 2*10^4 and smaller peer caps, prints only

Setup: the peers live in their own virtual environment, ``benchmarks/.venv-peers`` (created on
first use, re-created when the pinned requirements below change; ``--peers-venv`` moves it). privfreq
runs in the interpreter that imports it: ``--privfreq-python``, else this interpreter if it imports
privfreq, else the repository's ``.venv``. Every library runs in its own subprocess per case, with
BLAS, OpenMP and numba pinned to one thread.

Data: Zipf(1.1) item counts over [k] (largest-remainder rounding of n·(i+1)^-1.1 / H), the users in
a seeded random order; every subprocess builds the same array and reports its SHA-256, which the
parent checks. MSE is the mean over items of (f̂ - f)² against the users' own frequencies f.

Timing: client = the library's per-user (or batch) randomization of every user, server = its
aggregation of every report plus its estimate of all k frequencies ("decode" is the estimate
alone), in µs per user. One warm-up call on 100 users first (numba compiles, caches fill). The
peers are per-user Python; where a peer at the full n would take minutes, it runs on the first
``n`` users of the same shuffled data (a cap per peer and case, column "n"), and privfreq's MSE at
that same n (a separate run on the same users) is printed next to it, so MSE is always compared at
equal n. Peers are called as documented: pure-ldp's ``frequency_oracles`` client/server classes
(``privatise``, ``aggregate``, ``estimate_all``; 0-based ``index_mapper``), multi-freq-ldpy's
``pure_frequency_oracles`` ``*_Client`` / ``*_Aggregator_MI`` functions. multi-freq-ldpy's MI
estimator clips at 0 and renormalises; pure-ldp and privfreq return the raw unbiased estimate, so
the table also gives every library's MSE after the same clip-and-renormalise ("MSE c+n").
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER_REQUIREMENTS = ["pure-ldp==1.2.0", "multi-freq-ldpy==0.2.5", "xxhash<4", "scikit-learn",
                     "statsmodels"]
ZIPF_S = 1.1
DATA_SEED = 20250217
THREAD_ENV = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                               "NUMBA_NUM_THREADS", "BLIS_NUM_THREADS")}
WARMUP = 100
PEER_CHUNK = 1000

# ---------------------------------------------------------------------------------------------
# Cases. caps: the most users a peer runs (full n when None); chosen so that no peer/case takes
# more than ~30 s on this 2-core machine. Reasons are printed with the table.
K_SMALL, K_LARGE = 1024, 65536


def cases(quick: bool):
    def cap(c):
        return None if c is None else (max(200, c // 5) if quick else c)
    out = []
    for eps in (1.0, 4.0):
        out.append(dict(name=f"GRR k={K_SMALL} ε={eps:g}", proto="grr", k=K_SMALL, eps=eps,
                        libs={"privfreq": None, "pure-ldp": cap(None), "multi-freq-ldpy": cap(None)}))
    for eps in (1.0, 4.0):
        out.append(dict(name=f"OLH k={K_SMALL} ε={eps:g}", proto="olh", k=K_SMALL, eps=eps,
                        libs={"privfreq": None, "pure-ldp": cap(20_000),
                              "multi-freq-ldpy": cap(20_000)}))
    for eps in (1.0, 4.0):
        out.append(dict(name=f"SS k={K_SMALL} ε={eps:g}", proto="ss", k=K_SMALL, eps=eps,
                        libs={"privfreq": None, "multi-freq-ldpy": cap(None)}))
    for eps in (1.0, 4.0):
        out.append(dict(name=f"HR k={K_SMALL} ε={eps:g}", proto="hr", k=K_SMALL, eps=eps,
                        libs={"privfreq": None, "pure-ldp": cap(None)}))
    for proto, eps in (("oue", 1.0), ("oue", 4.0), ("sue", 4.0)):
        out.append(dict(name=f"{proto.upper()} k={K_LARGE} ε={eps:g}", proto=proto, k=K_LARGE,
                        eps=eps, libs={"privfreq": None, "pure-ldp": cap(5_000),
                                       "multi-freq-ldpy": cap(2_000)}))
    for eps in (1.0, 4.0):
        # pure-ldp's RAPPOR setting: 128 bits, 2 hashes, 8 cohorts, no instantaneous RR (pure-ldp
        # has none): privfreq with p = 0, q = 1 is the same randomizer (ε = ε∞ = 2h·ln((1-f/2)/(f/2))).
        out.append(dict(name=f"RAPPOR k={K_SMALL} ε={eps:g} (128 bits, 2 hashes, 8 cohorts, no IRR)",
                        proto="rappor", k=K_SMALL, eps=eps,
                        params=dict(bloom_bits=128, hashes=2, cohorts=8, p=0.0, q=1.0),
                        libs={"privfreq": None, "privfreq (Lasso stage forced)": None,
                              "pure-ldp": cap(None)},
                        extra={"privfreq (Lasso stage forced)": {"force_lasso": True}}))
        out.append(dict(name=f"RAPPOR k={K_SMALL} ε={eps:g} (privfreq default: 128 bits, 2 hashes, "
                        "16 cohorts, no IRR)", proto="rappor", k=K_SMALL, eps=eps,
                        params=dict(bloom_bits=128, hashes=2, cohorts=16, p=0.0, q=1.0),
                        libs={"privfreq": None}))
    out.append(dict(name=f"RAPPOR k={K_LARGE} ε=4 (1024 bits, 2 hashes, 16 cohorts, no IRR)",
                    proto="rappor", k=K_LARGE, eps=4.0,
                    params=dict(bloom_bits=1024, hashes=2, cohorts=16, p=0.0, q=1.0),
                    libs={"privfreq": None}))
    return out


NOT_RUN = {
    "SS": [("pure-ldp", "has no subset selection oracle")],
    "HR": [("multi-freq-ldpy", "has no Hadamard response")],
    "RAPPOR k=1024": [("multi-freq-ldpy", "has no Bloom-filter RAPPOR (its UE with optimal=False "
                       "is basic one-time RAPPOR = SUE)")],
    "RAPPOR k=65536": [("pure-ldp", "its server builds a dense (cohorts·bits) x d float64 design "
                        "= 16384 x 65536 = 8.6 GB, by 2·16·65536 Python hash calls"),
                       ("multi-freq-ldpy", "has no Bloom-filter RAPPOR")],
}


# ---------------------------------------------------------------------------------------------
# Workers (run inside the library's interpreter; numpy available there).

def zipf_items(k: int, n: int):
    import numpy as np
    w = (np.arange(k) + 1.0) ** -ZIPF_S
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: n - counts.sum()]] += 1
    items = np.repeat(np.arange(k, dtype=np.int64), counts)
    return np.random.default_rng(DATA_SEED).permutation(items)


def _mse(est, f):
    import numpy as np
    est = np.asarray(est, dtype=np.float64)
    clipped = np.clip(est, 0, None)
    s = clipped.sum()
    cn = clipped / s if s > 0 else clipped
    return float(np.mean((est - f) ** 2)), float(np.mean((cn - f) ** 2))


def run_privfreq(case, items, m, opts):
    import numpy as np
    from privfreq.protocols import get_protocol_class
    proto = get_protocol_class(case["proto"])(case["k"], case["eps"], **case.get("params", {}))
    kw = {"stderr": False}
    if opts.get("force_lasso"):
        kw["candidates"] = np.arange(case["k"])
    rng = np.random.default_rng([DATA_SEED, 1])
    warm = proto.randomize(items[:WARMUP], rng)
    proto.estimate(proto.add_reports(proto.create_accumulator(), warm), **kw)
    x = items[:m]
    step = proto.batch_rows
    acc = proto.create_accumulator()
    tc = ts = 0.0
    for lo in range(0, m, step):
        t0 = time.perf_counter()
        batch = proto.randomize(x[lo:lo + step], rng)
        t1 = time.perf_counter()
        acc = proto.add_reports(acc, batch)
        t2 = time.perf_counter()
        tc += t1 - t0
        ts += t2 - t1
        del batch
    t0 = time.perf_counter()
    est = proto.estimate(acc, **kw)
    td = time.perf_counter() - t0
    info = {}
    if "selected" in est.diagnostics:
        info["selected"] = len(est.diagnostics["selected"])
    return est.frequencies, tc, ts + td, td, info


def run_privfreq_mse_only(case, items, m, opts):
    """privfreq's MSE on the first m users (an independent run), for the rows of capped peers."""
    import numpy as np
    from privfreq.protocols import get_protocol_class
    proto = get_protocol_class(case["proto"])(case["k"], case["eps"], **case.get("params", {}))
    kw = {"stderr": False}
    if opts.get("force_lasso"):
        kw["candidates"] = np.arange(case["k"])
    rng = np.random.default_rng([DATA_SEED, 2, m])
    acc = proto.create_accumulator()
    for lo in range(0, m, proto.batch_rows):
        acc = proto.add_reports(acc, proto.randomize(items[lo:min(m, lo + proto.batch_rows)], rng))
    return proto.estimate(acc, **kw).frequencies


def _seed_peers(seed):
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    try:     # numba keeps its own generator, seeded only from jitted code
        import numba

        @numba.njit
        def _s(v):
            np.random.seed(v)
        _s(seed)
    except ImportError:
        pass


def run_pure_ldp(case, items, m, opts):
    import math
    import warnings
    import numpy as np
    warnings.simplefilter("ignore")
    import pure_ldp.frequency_oracles as fo
    k, eps, proto = case["k"], case["eps"], case["proto"]
    ident = lambda v: v   # noqa: E731  (pure-ldp's default maps 1-based data with x - 1)
    if proto == "grr":
        def make():
            return fo.DEClient(eps, k, index_mapper=ident), fo.DEServer(eps, k, index_mapper=ident)
    elif proto in ("oue", "sue"):
        oue = proto == "oue"

        def make():
            return (fo.UEClient(eps, k, use_oue=oue, index_mapper=ident),
                    fo.UEServer(eps, k, use_oue=oue, index_mapper=ident))
    elif proto == "olh":
        def make():
            return (fo.LHClient(eps, k, use_olh=True, index_mapper=ident),
                    fo.LHServer(eps, k, use_olh=True, index_mapper=ident))
    elif proto == "hr":
        def make():
            server = fo.HadamardResponseServer(eps, k, index_mapper=ident)
            return (fo.HadamardResponseClient(eps, k, server.get_hash_funcs(), index_mapper=ident),
                    server)
    elif proto == "rappor":
        prm = case["params"]
        h, b, c = prm["hashes"], prm["bloom_bits"], prm["cohorts"]
        f = 2.0 / (1.0 + math.exp(eps / (2 * h)))   # exact inverse of their convert_f_to_eps

        def make():
            server = fo.RAPPORServer(f, b, h, k, num_of_cohorts=c, index_mapper=ident)
            assert abs(server.epsilon - eps) < 1e-9, server.epsilon
            return fo.RAPPORClient(f, b, server.get_hash_funcs(), c, index_mapper=ident), server
    else:
        raise ValueError(proto)
    _seed_peers(DATA_SEED)
    client, server = make()
    for v in items[:WARMUP].tolist():
        server.aggregate(client.privatise(v))
    try:     # RAPPOR's Lasso may select nothing from 100 users; only a warm-up
        server.estimate_all(range(k), suppress_warnings=True)
    except ValueError:
        pass
    client, server = make()
    x = items[:m].tolist()
    tc = ts = 0.0
    for lo in range(0, m, PEER_CHUNK):   # chunks: UE reports at k = 65536 are 512 KiB each
        t0 = time.perf_counter()
        reports = [client.privatise(v) for v in x[lo:lo + PEER_CHUNK]]
        t1 = time.perf_counter()
        for r in reports:
            server.aggregate(r)
        t2 = time.perf_counter()
        tc += t1 - t0
        ts += t2 - t1
        del reports
    t2 = time.perf_counter()
    est = np.asarray(server.estimate_all(range(k), suppress_warnings=True), dtype=np.float64) / m
    t3 = time.perf_counter()
    return est, tc, ts + t3 - t2, t3 - t2, {}


def run_mfl(case, items, m, opts):
    import numpy as np
    k, eps, proto = case["k"], case["eps"], case["proto"]
    if proto == "grr":
        from multi_freq_ldpy.pure_frequency_oracles.GRR import GRR_Aggregator_MI, GRR_Client
        client = lambda v: GRR_Client(v, k, eps)                           # noqa: E731
        server = lambda reps: GRR_Aggregator_MI(reps, k, eps)              # noqa: E731
    elif proto in ("oue", "sue"):
        from multi_freq_ldpy.pure_frequency_oracles.UE import UE_Aggregator_MI, UE_Client
        opt = proto == "oue"
        client = lambda v: UE_Client(v, k, eps, opt)                       # noqa: E731
        server = lambda reps: UE_Aggregator_MI(reps, eps, opt)             # noqa: E731
    elif proto == "olh":
        from multi_freq_ldpy.pure_frequency_oracles.LH import LH_Aggregator_MI, LH_Client
        client = lambda v: LH_Client(v, k, eps, True)                      # noqa: E731
        server = lambda reps: LH_Aggregator_MI(reps, k, eps, True)         # noqa: E731
    elif proto == "ss":
        from multi_freq_ldpy.pure_frequency_oracles.SS import SS_Aggregator_MI, SS_Client
        client = lambda v: SS_Client(v, k, eps)                            # noqa: E731
        server = lambda reps: SS_Aggregator_MI(reps, k, eps)               # noqa: E731
    else:
        raise ValueError(proto)
    _seed_peers(DATA_SEED)
    server([client(v) for v in items[:WARMUP].tolist()])
    x = items[:m].tolist()
    t0 = time.perf_counter()
    reports = [client(v) for v in x]
    t1 = time.perf_counter()
    est = server(reports)
    t2 = time.perf_counter()
    return np.asarray(est, dtype=np.float64), t1 - t0, t2 - t1, t2 - t1, {}


RUNNERS = {"privfreq": run_privfreq, "pure-ldp": run_pure_ldp, "multi-freq-ldpy": run_mfl}


def worker(spec_json: str) -> None:
    import numpy as np
    spec = json.loads(spec_json)
    case, lib, n = spec["case"], spec["lib"], spec["n"]
    items = zipf_items(case["k"], n)
    digest = hashlib.sha256(items.tobytes()).hexdigest()[:16]
    m = spec["m"]
    f = np.bincount(items[:m], minlength=case["k"]) / m
    runner = RUNNERS[spec["runner"]]
    est, tc, ts, td, info = runner(case, items, m, spec.get("opts", {}))
    mse, mse_cn = _mse(est, f)
    out = dict(lib=lib, m=m, client_s=tc, server_s=ts, decode_s=td, mse=mse, mse_cn=mse_cn,
               data_sha=digest, info=info)
    extra_m = [x for x in spec.get("mse_at", []) if x != m]
    out["mse_at"] = {}
    for mm in extra_m:
        ff = np.bincount(items[:mm], minlength=case["k"]) / mm
        e = run_privfreq_mse_only(case, items, mm, spec.get("opts", {}))
        out["mse_at"][str(mm)] = _mse(e, ff)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------
# Parent: environment setup, subprocesses, table.

def venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_peers_venv(root: Path) -> Path:
    marker = root / "peers-requirements.txt"
    want = "\n".join(PEER_REQUIREMENTS) + "\n"
    py = venv_python(root)
    if py.exists() and marker.exists() and marker.read_text() == want:
        return py
    print(f"[setup] creating {root} and installing {' '.join(PEER_REQUIREMENTS)}", file=sys.stderr,
          flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    *PEER_REQUIREMENTS], check=True)
    marker.write_text(want)
    return py


def find_privfreq_python(flag: str | None) -> str:
    cands = [flag] if flag else [sys.executable, str(venv_python(REPO / ".venv"))]
    for c in cands:
        if c and Path(c).exists() and subprocess.run(
                [c, "-c", "import privfreq.protocols"], capture_output=True,
                env={**os.environ, **THREAD_ENV}).returncode == 0:
            return c
    sys.exit(f"no interpreter imports privfreq (tried {cands}); pass --privfreq-python")


def run_one(python: str, spec: dict, timeout: float) -> dict:
    env = {**os.environ, **THREAD_ENV, "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    try:
        p = subprocess.run([python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                           capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"lib": spec["lib"], "error": f"timeout after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[7:])
            out["wall_s"] = wall
            return out
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"lib": spec["lib"], "error": f"exit {p.returncode}: {tail[:200]}"}


def fmt(x, spec="{:.3g}"):
    return "–" if x is None else spec.format(x)


def sci(x):
    return "–" if x is None else f"{x:.2e}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="n = 2*10^4, peer caps / 5; print only")
    ap.add_argument("--n", type=int, help="users (default 200000, 20000 with --quick)")
    ap.add_argument("--only", help="run only cases whose name contains this (e.g. OUE, 'k=1024')")
    ap.add_argument("--privfreq-python", help="interpreter that imports privfreq")
    ap.add_argument("--peers-venv", default=str(HERE / ".venv-peers"))
    ap.add_argument("--out", help="Markdown file to write (default benchmarks/results/peers.md for "
                    "a full run of every case; nothing for --quick or --only)")
    ap.add_argument("--setup-only", action="store_true", help="create the peers' venv and stop")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per subprocess")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)

    start = time.perf_counter()
    n = args.n or (20_000 if args.quick else 200_000)
    peers_py = str(ensure_peers_venv(Path(args.peers_venv)))
    if args.setup_only:
        return
    pf_py = find_privfreq_python(args.privfreq_python)
    out_path = args.out or (None if (args.quick or args.only or args.n) else
                            str(HERE / "results" / "peers.md"))
    print(f"[setup] privfreq: {pf_py}; peers: {peers_py}; n = {n}", file=sys.stderr, flush=True)

    sections = []
    shas = set()
    for case in cases(args.quick):
        if args.only and args.only not in case["name"]:
            continue
        caps = {lib: min(n, c) if c else n for lib, c in case["libs"].items()}
        rows = []
        peer_ms = sorted({m for lib, m in caps.items() if not lib.startswith("privfreq")})
        for lib, m in caps.items():
            runner = "privfreq" if lib.startswith("privfreq") else lib
            spec = dict(case={kk: case[kk] for kk in ("proto", "k", "eps", "params") if kk in case},
                        lib=lib, runner=runner, n=n, m=m,
                        opts=case.get("extra", {}).get(lib, {}),
                        mse_at=peer_ms if runner == "privfreq" else [])
            py = pf_py if runner == "privfreq" else peers_py
            r = run_one(py, spec, args.timeout)
            if "data_sha" in r:
                shas.add((case["k"], r["data_sha"]))
            rows.append(r)
            msg = r.get("error") or (f"client {r['client_s']:.2f} s, server {r['server_s']:.2f} s, "
                                     f"MSE {r['mse']:.3g}, wall {r['wall_s']:.1f} s")
            print(f"[run] {case['name']} | {lib} (n={m}): {msg}", file=sys.stderr, flush=True)
        sections.append((case, rows))
    if len({sha for k, sha in shas}) != len({k for k, sha in shas}):
        sys.exit(f"data differ between interpreters: {sorted(shas)}")
    wall = time.perf_counter() - start
    text = render(sections, n, args, pf_py, peers_py, wall)
    print(text)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(text)
        print(f"[done] wrote {out_path}", file=sys.stderr)


def render(sections, n, args, pf_py, peers_py, wall) -> str:
    def versions(py):
        code = ("import importlib.metadata as m,sys,numpy\n"
                "for p in sys.argv[1:]:\n"
                "    try: print(p + '==' + m.version(p))\n"
                "    except Exception: pass\n")
        r = subprocess.run([py, "-c", code, "privfreq", "pure-ldp", "multi-freq-ldpy", "numpy",
                            "scipy", "scikit-learn", "statsmodels", "numba", "xxhash"],
                           capture_output=True, text=True, cwd="/")
        return ", ".join(r.stdout.split())
    cmd = "python benchmarks/peers.py" + "".join(
        f" {shlex.quote(a)}" for a in sys.argv[1:])
    lines = [
        "# privfreq vs pure-ldp and multi-freq-ldpy",
        "",
        f"Command: `{cmd}` (run {datetime.date.today().isoformat()}, "
        f"wall time {wall / 60:.1f} min, one run).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}), Python {platform.python_version()}; "
        "BLAS, OpenMP and numba at one thread in every subprocess.",
        f"privfreq interpreter: {versions(pf_py)}.",
        f"Peers' interpreter: {versions(peers_py)}.",
        "",
        f"Data: Zipf({ZIPF_S}) items, n = {n:,} users in a seeded random order, the same array in "
        "every subprocess (SHA-256 checked). Times are µs per user: client = randomize every "
        "user; server = aggregate every report + estimate all k frequencies (decode = the "
        "estimate alone, seconds). `n` is the number of users that library ran: peers whose cost "
        "is per-user Python run on the first n users of the same order where the full n would "
        "take minutes; \"privfreq MSE @n\" is privfreq on those same users (separate run). MSE "
        "is raw as each library returns it; \"MSE c+n\" after clipping at 0 and renormalising "
        "(multi-freq-ldpy's MI estimator always does this, so compare it on that column). "
        "Ratios are row / the \"privfreq\" row (> 1: privfreq faster). multi-freq-ldpy's "
        "`*_Aggregator_MI` counts and estimates in one call, so its decode is its whole server time. "
        "privfreq runs its defaults (OUE/SUE: `encoding=\"bitmap\"`; `estimate(acc, "
        "stderr=False)`, as no peer computes standard errors).",
        "",
    ]
    lines += ["## Summary: privfreq vs the fastest peer (client), per case", "",
              "| case | privfreq client / server µs | fastest peer | its n | peer client / server µs "
              "| client ratio | server ratio | MSE c+n at the peer's n: privfreq / peer |",
              "|---|---|---|---|---|---|---|---|"]
    for case, rows in sections:
        base = next((r for r in rows if r["lib"] == "privfreq" and "error" not in r), None)
        peers = [r for r in rows if not r["lib"].startswith("privfreq") and "error" not in r]
        if base is None or not peers:
            continue
        best = min(peers, key=lambda r: r["client_s"] / r["m"])
        bcu, bsu = 1e6 * base["client_s"] / base["m"], 1e6 * base["server_s"] / base["m"]
        cu, su = 1e6 * best["client_s"] / best["m"], 1e6 * best["server_s"] / best["m"]
        pcn = (base["mse_cn"] if best["m"] == base["m"]
               else base.get("mse_at", {}).get(str(best["m"]), [None, None])[1])
        lines.append(f"| {case['name']} | {bcu:.3g} / {bsu:.3g} | {best['lib']} | {best['m']:,} | "
                     f"{cu:.3g} / {su:.3g} | {cu / bcu:.1f}× | {su / bsu:.1f}× | "
                     f"{sci(pcn)} / {sci(best['mse_cn'])} |")
    lines += ["", "## Per case", ""]
    for case, rows in sections:
        base = next((r for r in rows if r["lib"] == "privfreq" and "error" not in r), None)
        lines += [f"### {case['name']}", "",
                  "| library | n | client µs/user | server µs/user | decode s | MSE | MSE c+n | "
                  "privfreq MSE @n (raw / c+n) | client ratio | server ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['lib']} | – | {r['error']} | | | | | | | |")
                continue
            cu, su = 1e6 * r["client_s"] / r["m"], 1e6 * r["server_s"] / r["m"]
            pm = "–"
            cr = sr = "–"
            if base is not None and r is not base:
                bcu, bsu = 1e6 * base["client_s"] / base["m"], 1e6 * base["server_s"] / base["m"]
                cr, sr = f"{cu / bcu:.1f}×", f"{su / bsu:.1f}×"
                if r["lib"].startswith("privfreq"):
                    pass
                elif r["m"] == base["m"]:
                    pm = f"{sci(base['mse'])} / {sci(base['mse_cn'])}"
                elif str(r["m"]) in base.get("mse_at", {}):
                    a, b = base["mse_at"][str(r["m"])]
                    pm = f"{sci(a)} / {sci(b)}"
            note = ""
            if r.get("info", {}).get("selected") is not None:
                note = f" ({r['info']['selected']} selected)"
            lines.append(f"| {r['lib']}{note} | {r['m']:,} | {cu:.3g} | {su:.3g} | "
                         f"{r['decode_s']:.3g} | {sci(r['mse'])} | {sci(r['mse_cn'])} | {pm} | "
                         f"{cr} | {sr} |")
        for key, skipped in NOT_RUN.items():
            if case["name"].startswith(key) and "privfreq default" not in case["name"]:
                for lib, why in skipped:
                    lines.append(f"| {lib}: not run | | {why} | | | | | | | |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
