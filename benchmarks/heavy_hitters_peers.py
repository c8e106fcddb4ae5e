"""privfreq's PEM beside pure-ldp's PEM, TreeHist and SFP on real text (issue 14, part 5).

    python benchmarks/heavy_hitters_peers.py --quick        # n = 2·10^4, 2 runs, prints only
    python benchmarks/heavy_hitters_peers.py --out benchmarks/results/heavy_hitters_peers.md

Run it with the repository's ``.venv`` python (privfreq and the ``bench`` extra's ``wordfreq``
installed). pure-ldp 1.2.0 runs in ``benchmarks/.venv-peers``, created by ``benchmarks/peers.py``'s
``ensure_peers_venv`` (same pinned requirements), one subprocess per (method, n, ε) with BLAS,
OpenMP and numba pinned to one thread (``peers.THREAD_ENV``, also set here before numpy loads).

Data: ``benchmarks/heavy_hitters.py``'s truth (wordfreq's top 100,000 English words + 5 planted
words, ids = top 32 bits of ``hashing.item_id``); run ``s`` draws n users with
``default_rng(s).choice`` exactly as that benchmark does (privfreq's rows reproduce its numbers).
The users of every run are written once as ``.npy`` and read by every method; each worker returns
the SHA-256 of the array it read, which the parent checks against its own. Peers get each id as
its 32-character bit string.

Methods (all on the same 2^32 universe, top-N = 20):
* privfreq PEM: step 8 (levels 8/16/24/32 bits), OLH on 2^8 then HCMS (K = 256, m = 1024), keeps
  2N per level; and the same with ``oracle="mss"`` (MSS on the 2^8 level, moduli from the planner).
* pure-ldp PEM: ``PEMClient/PEMServer(start_length=0, max_string_length=32, fragment_length=8)``
  with pure-ldp's HCMS (``CMSClient/CMSServer(is_hadamard=True)``, K = 256, m = 1024) at the full ε;
  keeps N per level (its algorithm). Its default OLH server loops over the whole 2^len domain per
  report (``LHServer.aggregate``), impossible at 2^32, hence the sketch oracle.
* pure-ldp TreeHist: ``TreeHistClient/Server(fragment_length=8)``, same HCMS; ε/2 for the prefix
  and ε/2 for the word (its design).
* pure-ldp SFP: ``SFPClient/Server(fragment_length=2)``, same HCMS, ε/2 + ε/2 (its design);
  fragment length 2 because its server estimates 256·3^len fragments per position with a Python
  loop over K hashes each (len 8: 1.7M fragments per position). Its alphabet is passed as a set
  (its server calls ``alphabet.add``). When it returns more than N words, the N with the largest
  estimates are kept.
pure-ldp 1.2.0 calls ``np.zeros(None)`` in ``FreqOracleServer.__init__``/``reset``, an error under
numpy 2 (the venv has numpy 2.x); the worker replaces that module's ``np`` with a proxy mapping a
``None`` shape to 0 (the sketch servers never use that array).

Metrics per run: precision = |found ∩ true top-N| / |found|, recall = |found ∩ true top-N| / N,
F1 = 2PR/(P+R) (0 when nothing is found); mean ± sd over seeded runs. Client = randomizing every
user (privfreq: one numpy batch; peers: ``privatise`` per user), server = aggregating every report
and the search (privfreq: ``add_reports`` + ``discover``; peers: ``aggregate`` per report +
``find_heavy_hitters(k=N)``). Seconds per run, mean over runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import THREAD_ENV, _seed_peers, ensure_peers_venv  # noqa: E402  (stdlib-only module)

os.environ.update(THREAD_ENV)   # before numpy loads: one BLAS/OpenMP thread
import numpy as np  # noqa: E402

TOP = 20
BITS = 32
HCMS_K, HCMS_M = 256, 1024       # privfreq's HCMS defaults; the peers get the same sketch
PEER_METHODS = ("pure-ldp PEM", "pure-ldp TreeHist", "pure-ldp SFP")


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def scores(found, truth: set, top: int) -> tuple[float, float, float]:
    hit = len(truth & set(found))
    p = hit / len(found) if len(found) else 0.0
    r = hit / top
    return p, r, (2 * p * r / (p + r) if hit else 0.0)


# ----- worker: one pure-ldp method over several runs (peers' interpreter) ------------------------
def _patch_numpy_none_shape():
    import pure_ldp.core._freq_oracle_server as fos

    class _NumpyProxy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def zeros(shape, *args, **kwargs):
            return np.zeros(0 if shape is None else shape, *args, **kwargs)

    fos.np = _NumpyProxy()


def _peer(method: str, eps: float):
    from pure_ldp.frequency_oracles.apple_cms import CMSClient, CMSServer
    from pure_ldp.heavy_hitters.apple_sfp import SFPClient, SFPServer
    from pure_ldp.heavy_hitters.prefix_extending import PEMClient, PEMServer
    from pure_ldp.heavy_hitters.treehistogram import TreeHistClient, TreeHistServer

    fs = CMSServer(eps, HCMS_K, HCMS_M, is_hadamard=True)
    fc = CMSClient(eps, fs.get_hash_funcs(), HCMS_M, is_hadamard=True)
    if method == "pure-ldp PEM":
        return (PEMClient(eps, 0, BITS, 8, fo_client=fc),
                PEMServer(eps, 0, BITS, 8, fo_server=fs))
    if method == "pure-ldp TreeHist":
        return TreeHistClient(eps, 8, BITS, fo_client=fc), TreeHistServer(eps, BITS, 8, fo_server=fs)
    return (SFPClient(eps, 2, BITS, alphabet={"0", "1"}, fo_client=fc),
            SFPServer(eps, 2, BITS, alphabet={"0", "1"}, fo_server=fs))


def worker(spec: dict) -> None:
    _patch_numpy_none_shape()
    truth = set(spec["truth"])
    out = []
    for seed, path in zip(spec["seeds"], spec["files"]):
        users = np.load(path)
        strings = [format(int(u), f"0{BITS}b") for u in users.tolist()]
        _seed_peers(seed)
        client, server = _peer(spec["method"], spec["eps"])
        t0 = time.perf_counter()
        reports = [client.privatise(s) for s in strings]
        t1 = time.perf_counter()
        for r in reports:
            server.aggregate(r)
        words, freqs = server.find_heavy_hitters(k=TOP)
        t2 = time.perf_counter()
        ranked = sorted(zip(list(freqs), list(words)), reverse=True)[:TOP]
        found = [int(w.replace("*", ""), 2) for _, w in ranked if w.replace("*", "")]
        out.append({"seed": seed, "sha": sha(users), "scores": scores(found, truth, TOP),
                    "client_s": t1 - t0, "server_s": t2 - t1, "found": len(found)})
        print(f"[{spec['method']} n={len(users)} eps={spec['eps']:g} seed={seed}] "
              f"{out[-1]['scores']} client {t1 - t0:.1f}s server {t2 - t1:.1f}s",
              file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(out), flush=True)


def run_worker(python: str, spec: dict, timeout: float) -> list | str:
    env = {**os.environ, **THREAD_ENV, "PYTHONHASHSEED": "0"}
    try:
        p = subprocess.run([python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                           capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout:.0f} s"
    sys.stderr.write(p.stderr)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return f"exit {p.returncode}: {(p.stderr.strip().splitlines() or ['no output'])[-1][:200]}"


# ----- parent (privfreq's interpreter) --------------------------------------------------------------
def privfreq_run(ids, p, n, eps, seed, truth, oracle):
    from privfreq.protocols.pem import PEM, discover
    rng = np.random.default_rng(seed)
    users = ids[rng.choice(len(ids), n, p=p)]       # = heavy_hitters.one_run's draw
    proto = PEM(2**BITS, eps, step=8, oracle=oracle)
    t0 = time.perf_counter()
    batch = proto.randomize(users, rng)
    t1 = time.perf_counter()
    acc = proto.add_reports(proto.create_accumulator(), batch)
    found = discover(proto, acc, top=TOP)
    t2 = time.perf_counter()
    return users, {"seed": seed, "sha": sha(users), "scores": scores(found.items.tolist(), truth, TOP),
                   "client_s": t1 - t0, "server_s": t2 - t1, "found": len(found.items)}


def summarize(method, n, eps, rows, note=""):
    s = np.array([r["scores"] for r in rows])
    m, sd = s.mean(axis=0), (s.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(3))
    tc = np.mean([r["client_s"] for r in rows])
    ts = np.mean([r["server_s"] for r in rows])
    cell = " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in zip(m, sd))
    return (f"| {method} | {n:.0e} | {eps:g} | {len(rows)}{note} | {cell} | {tc:.2f} "
            f"({tc / n * 1e6:.1f} µs/user) | {ts:.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="n = 2·10^4, 2 runs, no file written")
    ap.add_argument("--n", type=int, nargs="+", default=[10**5, 10**6])
    ap.add_argument("--eps", type=float, nargs="+", default=[2.0, 4.0])
    ap.add_argument("--runs", type=int, default=10, help="privfreq runs per cell")
    ap.add_argument("--peer-runs", type=int, nargs="+", default=[5, 3],
                    help="pure-ldp runs per cell, one value per --n (seeds 0..r-1)")
    ap.add_argument("--vocab", type=int, default=100000)
    ap.add_argument("--peers-venv", default=str(HERE / ".venv-peers"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per peer subprocess")
    ap.add_argument("--out", default=None, help="write the markdown here")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    if args.quick:
        args.n, args.runs, args.peer_runs = [20000], 2, [2]
    if len(args.peer_runs) != len(args.n):
        ap.error("--peer-runs needs one value per --n")
    from heavy_hitters import PLANTED, word_distribution
    from privfreq.protocols.hashing import item_id

    t_start = time.perf_counter()
    peers_py = str(ensure_peers_venv(Path(args.peers_venv)))
    words, p = word_distribution(args.vocab)
    ids = (item_id(words).view(np.uint64) >> np.uint64(64 - BITS)).astype(np.int64)
    truth_ids = ids[np.argsort(-p, kind="stable")[:TOP]]
    truth = set(truth_ids.tolist())
    rows, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n, peer_runs in zip(args.n, args.peer_runs):
            for eps in args.eps:
                files, shas = [], []
                for oracle, label in (("auto", "privfreq PEM"), ("mss", "privfreq PEM (MSS level 0)")):
                    res = []
                    for seed in range(args.runs):
                        users, r = privfreq_run(ids, p, n, eps, seed, truth, oracle)
                        res.append(r)
                        if oracle == "auto" and seed < peer_runs:
                            path = f"{tmp}/users_{n}_{seed}.npy"
                            if not os.path.exists(path):
                                np.save(path, users)
                            files.append(path)
                            shas.append(r["sha"])
                    rows.append(summarize(label, n, eps, res))
                    print(rows[-1], flush=True)
                for method in PEER_METHODS:
                    spec = {"method": method, "eps": eps, "seeds": list(range(peer_runs)),
                            "files": files, "truth": truth_ids.tolist()}
                    res = run_worker(peers_py, spec, args.timeout)
                    if isinstance(res, str):
                        rows.append(f"| {method} | {n:.0e} | {eps:g} | 0 | {res} | | | | |")
                    else:
                        same = [r["sha"] for r in res] == shas
                        checks.append(same)
                        rows.append(summarize(method, n, eps, res, "" if same else " (DATA DIFFER)"))
                    print(rows[-1], flush=True)
    wall = time.perf_counter() - t_start
    top_p = np.sort(p)[::-1]
    cmd = "python benchmarks/heavy_hitters_peers.py " + " ".join(argv if argv is not None
                                                                  else sys.argv[1:])
    peer_versions = subprocess.run(
        [peers_py, "-c", "import importlib.metadata as m, numpy; "
                         "print(m.version('pure-ldp'), numpy.__version__)"],
        capture_output=True, text=True).stdout.split()
    lines = [
        f"Command: `{cmd.strip()}` (wall {wall / 60:.1f} min)", "",
        f"Truth: wordfreq {args.vocab} English words + {len(PLANTED)} planted; true top-{TOP} "
        f"shares {top_p[0]:.2%} .. {top_p[TOP - 1]:.2%} (#{TOP + 1}: {top_p[TOP]:.2%}); ids = top "
        f"{BITS} bits of item_id. Same users for every method in run s (seed s); data SHA-256 "
        f"checked for every peer run: {'all equal' if all(checks) else 'MISMATCH'} "
        f"({len(checks)} peer cells). pure-ldp {peer_versions[0] if peer_versions else '?'} "
        f"(numpy {peer_versions[1] if len(peer_versions) > 1 else '?'}); one BLAS thread; "
        f"Python {sys.version.split()[0]}.", "",
        f"| method | n | ε | runs | precision | recall | F1 | client s | server s |",
        "|---|---|---|---|---|---|---|---|---|", *rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out and not args.quick:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
