"""Compact reports: message size and server expansion cost of seed-compressed SS and MSS and
PI-RAPPOR against SS and MSS (issue 15).

    python benchmarks/compact_reports.py [--n 20000]

Per (k, ε): wire bytes and information bits per report; client µs per report (``randomize``);
server µs per report (``add_reports``: css expands every seed into its ω-subset of [k], cmss into
its ω_j-subset of [m_j], PI-RAPPOR scans the k items, SS and MSS count the subset they received);
MSS and cmss on the planner's least-MSE moduli (the same for both); best of 3, one thread; writes
benchmarks/results/compact.md. css and cmss privacy is computational (docs/advisor.md).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from privfreq.protocols import get_protocol_class  # noqa: E402
from privfreq.protocols.planner import _info_bits, plan  # noqa: E402

from _timing import best_of  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args(argv)
    lines = ["# Compact reports: message size and server expansion cost", "",
             f"`python benchmarks/compact_reports.py --n {args.n}` (one thread, best of 3, shared "
             "2-core machine). css = seed-compressed SS, cmss = seed-compressed MSS (both "
             "computational privacy); their server expands each 8-byte seed into the ω-subset "
             "(cmss: ω_j-subset of [m_j], the block j travels in the report's block field); "
             "MSS and cmss use the planner's least-MSE moduli (ω column: mean ω_j); "
             "PI-RAPPOR's server scans all k items per report.", "",
             "| k | ε | protocol | ω | bits | wire bytes | client µs/report | server µs/report | "
             "n·MSE |", "|---|---|---|---|---|---|---|---|---|"]
    for k in (1024, 22000):
        for eps in (1.0, 2.0, 4.0):
            moduli = plan(k, eps, top=1)[0].moduli
            for pid in ("ss", "css", "pi_rappor", "mss", "cmss"):
                extra = {"moduli": moduli} if pid in ("mss", "cmss") else {}
                proto = get_protocol_class(pid)(k=k, epsilon=eps, **extra)
                n = args.n if pid in ("ss", "mss") else min(
                    args.n, 5000 if pid in ("css", "cmss") else max(1000, int(3e7 / k)))
                rng = np.random.default_rng(0)
                items = rng.integers(0, k, n)
                batch = proto.randomize(items, rng)
                c = best_of(lambda: proto.randomize(items, rng)) / n * 1e6
                s = best_of(lambda: proto.add_reports(proto.create_accumulator(), batch)) / n * 1e6
                omega = getattr(proto, "omega", None) or getattr(getattr(proto, "ss", None),
                                                                 "omega", "-")
                if pid in ("mss", "cmss"):
                    omega = f"{np.mean([b.omega for b in proto.blocks]):.0f}"
                    pid = f"{pid} {list(moduli)}"
                bits = _info_bits(proto.ss) if pid == "ss" else proto.information_bits()
                wire = np.mean([proto.payload_width(b) for b in range(proto.n_blocks)])
                lines.append(f"| {k} | {eps:g} | {pid} | {omega} | {bits:.4g} | "
                             f"{wire:.0f} | {c:.3g} | {s:.3g} | "
                             f"{proto.predicted_mse(1):.4g} |")
                print(lines[-1], flush=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "compact.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
