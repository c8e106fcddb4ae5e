"""Bytes per report vs MSE vs ASR for every one-shot protocol, the advisor's picks marked (issue 15).

    python benchmarks/advisor_figure.py [--n 1000000] [--delta 1]

One panel per (k, ε), k ∈ {1024, 22 000, 2^20} (rows) × ε ∈ {1, 2, 4} (columns): x = wire bytes
per report (log), y = n·MSE (per-user MSE at f = 0; MSS: whole covariance at uniform f; log),
colour = closed-form ASR (log scale), one labelled point per protocol (``advisor.advise``, MSS with
the planner's moduli, refined knobs at their least-MSE value; the ASR-tuned refined points are
added as hollow markers). The advisor's picks without limits are ringed: objective mse (circle),
asr (square), bytes (triangle), δ = --delta. Writes benchmarks/results/advisor.png and
benchmarks/results/advisor.md (the numbers behind every point and the picks).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from privfreq.protocols.advisor import advise  # noqa: E402

KS = (1024, 22000, 1 << 20)
EPSILONS = (1.0, 2.0, 4.0)
PICK_MARKERS = {"mse": "o", "asr": "s", "bytes": "^"}


def _knob(o):
    extra = {k: v for k, v in o.params.items() if k not in ("k", "epsilon", "seed_bits", "ridge")}
    return ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}"
                     for k, v in extra.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10**6)
    ap.add_argument("--delta", type=float, default=1.0)
    args = ap.parse_args(argv)
    t0 = time.time()
    cells = {}
    for k in KS:
        for eps in EPSILONS:
            res = {obj: advise(k, eps, n=args.n, objective=obj, delta=args.delta)
                   for obj in ("mse", "asr", "bytes")}
            cells[(k, eps)] = res
            print(f"k={k} eps={eps}: picks " + ", ".join(
                f"{obj}={r[0].protocol_id}" for obj, r in res.items()), flush=True)
    asrs = [o.asr for c in cells.values() for r in c.values() for o in r
            if math.isfinite(o.asr) and o.asr > 0]
    norm = LogNorm(min(asrs), max(asrs))
    fig, axes = plt.subplots(len(KS), len(EPSILONS), figsize=(5.2 * len(EPSILONS), 4.4 * len(KS)))
    for i, k in enumerate(KS):
        for j, eps in enumerate(EPSILONS):
            ax = axes[i, j]
            res = cells[(k, eps)]
            pts = [o for o in res["mse"] if math.isfinite(o.mse_n1) and math.isfinite(o.wire_bytes)]
            sc = ax.scatter([o.wire_bytes for o in pts], [o.mse_n1 for o in pts],
                            c=[o.asr for o in pts], norm=norm, cmap="viridis", s=36, zorder=3)
            for o in pts:
                ax.annotate(o.protocol_id, (o.wire_bytes, o.mse_n1), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            tuned = [o for o in res["asr"] if o.protocol_id in ("ass", "aue", "alh", "athe")
                     and math.isfinite(o.mse_n1)]
            ax.scatter([o.wire_bytes for o in tuned], [o.mse_n1 for o in tuned],
                       facecolors="none", edgecolors=[plt.cm.viridis(norm(o.asr)) for o in tuned],
                       s=36, zorder=3, label="refined, ASR-tuned")
            for obj, marker in PICK_MARKERS.items():
                o = res[obj][0]
                ax.scatter([o.wire_bytes], [o.mse_n1], marker=marker, s=180, facecolors="none",
                           edgecolors="red", linewidths=1.4, zorder=4, label=f"pick: {obj}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"k = {k:,}, ε = {eps:g}")
            ax.set_xlabel("wire bytes per report")
            ax.set_ylabel("n·MSE")
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="upper right")
    fig.colorbar(sc, ax=axes, label="ASR (closed form, uniform prior)", shrink=0.6)
    out_png = os.path.join(ROOT, "benchmarks", "results", "advisor.png")
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    lines = ["# Advisor: bytes per report vs MSE vs ASR",
             "",
             f"`python benchmarks/advisor_figure.py --n {args.n} --delta {args.delta:g}` "
             f"({time.time() - t0:.0f} s). Figure: [advisor.png](advisor.png). n·MSE is the "
             "per-user MSE at f = 0 (MSS: whole covariance at uniform f); ASR the closed form "
             "under a uniform prior (approximate for OLH/ALH, PGR at K > 4096, PI-RAPPOR, and MSS's "
             "SPEC §4 form); client µs and server s for n reports from the fitted cost model "
             "(benchmarks/results/cost_model.md). Picks without limits; `asr` and `bytes` rank "
             f"the options with MSE <= (1+δ)·best, δ = {args.delta:g}. `css` is computational "
             "privacy.", ""]
    lines += ["## Picks", "", "| k | ε | mse | asr | bytes |", "|---|---|---|---|---|"]
    for (k, eps), res in cells.items():
        cell = []
        for obj in ("mse", "asr", "bytes"):
            o = res[obj][0]
            cell.append(f"{o.protocol_id} ({_knob(o) or '-'}; n·MSE {o.mse_n1:.3g}, "
                        f"{o.wire_bytes:.4g} B, ASR {o.asr:.3g})")
        lines.append(f"| {k:,} | {eps:g} | " + " | ".join(cell) + " |")
    for (k, eps), res in cells.items():
        lines += ["", f"## k = {k:,}, ε = {eps:g} (least-MSE knobs; ASR-tuned refined in "
                  "brackets)", "",
                  "| protocol | knob | n·MSE | bits | bytes | ASR | client µs | server s (n) | "
                  "privacy |", "|---|---|---|---|---|---|---|---|---|"]
        tuned = {o.protocol_id: o for o in res["asr"]}
        for o in res["mse"]:
            if o.ruled_out:
                lines.append(f"| {o.protocol_id} | - | - | - | - | - | - | - | "
                             f"{'; '.join(o.ruled_out)} |")
                continue
            t = tuned.get(o.protocol_id)
            extra = ""
            if o.protocol_id in ("ass", "aue", "alh", "athe") and t is not None:
                extra = f" [{_knob(t)}: n·MSE {t.mse_n1:.3g}, ASR {t.asr:.3g}]"
            lines.append(f"| {o.protocol_id} | {_knob(o) or '-'} | {o.mse_n1:.4g}{extra} | "
                         f"{o.information_bits:.4g} | {o.wire_bytes:.4g} | {o.asr:.3g} | "
                         f"{o.client_us:.3g} | {o.server_s:.3g} | {o.privacy} |")
    with open(os.path.join(ROOT, "benchmarks", "results", "advisor.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out_png} and advisor.md in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
