"""Planner picks for k in {1024, 22000} x ε in {1, 2, 4}, two modes, top 3, written as JSON
(the tables of benchmarks/results/planner_picks.md).

    python benchmarks/planner_picks.py OUT.json
"""
import json
import sys
import time

from privfreq.protocols import planner
out = {}
for k in (1024, 22000):
    for eps in (1.0, 2.0, 4.0):
        for mode, kw in [("min-mse", {}), ("factor1.3-ell2", {"ell": 2, "max_mse_factor": 1.3})]:
            t = time.time()
            c = planner.plan(k, eps, top=3, **kw)
            out[f"{k} {eps} {mode}"] = [(list(x.moduli), round(x.predicted_mse_n1, 4), round(x.mse_ratio_ss, 4), round(x.bits, 1)) for x in c]
            print(k, eps, mode, out[f"{k} {eps} {mode}"], round(time.time()-t, 2), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
