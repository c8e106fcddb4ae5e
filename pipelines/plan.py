"""Rank MSS moduli for a universe size and budget (``protocols.planner.plan``).

    privfreq plan --k 1024 --epsilon 1 [--ell 2] [--max-mse-factor 1.2] [--max-bits 12] [--json]

Prints one line per candidate (moduli, ℓ, bits per report, MSE ratio to SS on [k], predicted n·MSE,
condition number), best first; ``--json`` prints the candidates as a JSON list instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math


def run(argv=None, save_main_session=True):
    from privfreq.protocols.planner import plan

    parser = argparse.ArgumentParser(prog="privfreq plan", description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, required=True, help="universe size")
    parser.add_argument("--epsilon", type=float, required=True, help="privacy budget (> 0)")
    parser.add_argument("--ell", type=int, default=None, help="number of moduli (default: 2-4)")
    parser.add_argument("--max-mse-factor", type=float, default=None,
                        help="keep candidates within this MSE factor of SS, rank by bits")
    parser.add_argument("--max-bits", type=float, default=None,
                        help="keep candidates with at most this many bits per report")
    parser.add_argument("--seed", type=int, default=0, help="seed of the planner's random draws")
    parser.add_argument("--top", type=int, default=10, help="how many candidates to print")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    candidates = plan(args.k, args.epsilon, ell=args.ell, max_mse_factor=args.max_mse_factor,
                      max_bits=args.max_bits, seed=args.seed, top=args.top)
    rows = [{**dataclasses.asdict(c), "moduli": list(c.moduli)} for c in candidates]
    if args.json:
        print(json.dumps([{k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                           for k, v in r.items()} for r in rows], indent=2))
    else:
        print(f"{'moduli':<24} {'ell':>3} {'bits':>7} {'MSE/SS':>7} {'n*MSE':>10} {'cond':>6}")
        for r in rows:
            print(f"{','.join(map(str, r['moduli'])):<24} {r['ell']:>3} {r['bits']:>7.2f} "
                  f"{r['mse_ratio_ss']:>7.3f} {r['predicted_mse_n1']:>10.4g} "
                  f"{r['condition_number']:>6.2f}")
    return candidates


if __name__ == "__main__":
    run()
