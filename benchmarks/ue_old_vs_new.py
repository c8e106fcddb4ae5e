"""OUE/SUE at k = 65 536: this checkout vs the code before the unary samplers (issue 17), old and
new interleaved in one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/ue_old_vs_new.py [--rounds 7] [--eps 4 1]

The old tree is ``git archive <--old, default 3dc996b~1>`` unpacked into a temporary directory
and imported through a ``privfreq`` symlink on PYTHONPATH (the repository itself is not touched).
Each round starts one worker process per side, old and new in alternating order; a worker times
``randomize`` (client) and ``add_reports`` (server) on 2048 reports (items uniform on [k],
``default_rng(0)``), best of 3 after a warm-up, in wall-clock and in CPU time (process_time,
less sensitive to other jobs on a shared machine). Old: the protocol's defaults (packed bitmap);
new: ``encoding="auto"`` (OUE at ε = 4 → "indices", SUE → "bitmap"). Printed: the medians over the
rounds of each side's µs per report and of the per-round old/new ratios (with their range).
BLAS/OpenMP threads are pinned to 1 in the workers.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

K = 65536
N = 2048
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(side, eps_list):
    import numpy as np
    from threadpoolctl import threadpool_limits
    import privfreq.protocols.unary_encoding as ue
    from privfreq.protocols import get_protocol_class
    threadpool_limits(1)
    kw = {} if side == "old" else {"encoding": "auto"}
    for eps in eps_list:
        for pid in ("oue", "sue"):
            pr = get_protocol_class(pid)(k=K, epsilon=eps, **kw)
            rng = np.random.default_rng(0)
            x = rng.integers(0, K, N)
            best = {}
            for rep in range(4):                       # rep 0: warm-up
                t = (time.perf_counter(), time.process_time())
                batch = pr.randomize(x, rng)
                u = (time.perf_counter(), time.process_time())
                pr.add_reports(pr.create_accumulator(), batch)
                v = (time.perf_counter(), time.process_time())
                if rep:
                    for name, a, b in (("client", t, u), ("server", u, v)):
                        for i, clock in enumerate(("wall", "cpu")):
                            key = f"{name}_{clock}"
                            best[key] = min(best.get(key, 1e9), (b[i] - a[i]) / N * 1e6)
            print(json.dumps({"side": side, "pid": pid, "eps": eps,
                              "encoding": getattr(pr, "encoding", "bitmap"),
                              "module": ue.__file__, **best}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default="3dc996b~1")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--eps", type=float, nargs="+", default=[4.0])
    ap.add_argument("--worker", choices=["old", "new"])
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.eps)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        tree, pkg = os.path.join(tmp, "old"), os.path.join(tmp, "pkg")
        os.makedirs(tree)
        os.makedirs(pkg)
        archive = subprocess.run(["git", "-C", REPO, "archive", args.old], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        os.symlink(tree, os.path.join(pkg, "privfreq"))
        rows = []
        for r in range(args.rounds):
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                e = dict(env, PYTHONPATH=pkg) if side == "old" else env
                out = subprocess.run([sys.executable, __file__, "--worker", side, "--eps",
                                      *map(str, args.eps)], env=e, check=True,
                                     capture_output=True, text=True, cwd=tmp).stdout
                for line in out.splitlines():
                    rows.append(dict(json.loads(line), round=r))
                    assert rows[-1]["module"].startswith(pkg if side == "old" else REPO), rows[-1]
    print(f"old = {args.old}, new = {REPO} (working tree); k = {K}, n = {N}, "
          f"{args.rounds} rounds; µs per report, medians; ratio = old/new per round: median [min-max]")
    print("| protocol | ε | new encoding | clock | old client | new client | ratio | old server "
          "| new server | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for eps in args.eps:
        for pid in ("oue", "sue"):
            sel = {s: sorted((x for x in rows if x["pid"] == pid and x["eps"] == eps
                              and x["side"] == s), key=lambda x: x["round"])
                   for s in ("old", "new")}
            for clock in ("wall", "cpu"):
                cells = []
                for name in ("client", "server"):
                    key = f"{name}_{clock}"
                    old = [x[key] for x in sel["old"]]
                    new = [x[key] for x in sel["new"]]
                    ratio = [a / b for a, b in zip(old, new)]
                    cells += [f"{statistics.median(old):.1f}", f"{statistics.median(new):.1f}",
                              f"{statistics.median(ratio):.1f}x [{min(ratio):.1f}-{max(ratio):.1f}]"]
                print(f"| {pid.upper()} | {eps:g} | {sel['new'][0]['encoding']} | {clock} | "
                      + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
